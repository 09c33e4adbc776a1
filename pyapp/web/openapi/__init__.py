"""The OpenAPI description of the HTTP API: document.py assembles it and serves it; one module per resource."""
