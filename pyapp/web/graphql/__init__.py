"""The GraphQL facade: ``POST /v3/graphql`` and the GraphiQL page (``GET /v3/graphql``): endpoint.py serves them,
schema.py declares the schema and its resolvers, documents.py parses and validates queries, limits.py bounds
them, plan.py compiles the SDKs' query, fast.py answers it in front of the framework, ide.py is the page."""
