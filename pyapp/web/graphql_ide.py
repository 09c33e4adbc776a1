"""The GraphiQL page served by ``GET /v3/graphql``.

The page itself is static and carries no data, so it is served without an API key; the queries
it sends need one, in the headers editor (pre-filled with an ``x-api-key`` placeholder). GraphiQL
and React are loaded from unpkg with subresource integrity (the versions and hashes Strawberry
ships), so the browser needs internet access to render it.
"""

from __future__ import annotations

import json

EXAMPLE_QUERY = """\
# Passthrough: audience membership, ODP-compatible.
# Put a public or private API key in the Headers tab below, then run (Ctrl-Enter).
#
# The Optimizely SDKs send this query; Python, Go and Java with variables,
# JavaScript with the values written inline: customer(fs_user_id: "user-1").
query($userId: String, $audiences: [String]) {
  customer(fs_user_id: $userId) {
    audiences(subset: $audiences) {
      edges { node { name state description is_ready revision size } }
    }
  }
}

# Every audience, 100 at a time (first may be up to 1000; pass after: endCursor for the next page):
# { audiences(first: 100) { edges { cursor node { name revision description is_ready size } }
#                          pageInfo { hasNextPage endCursor } } }
"""

EXAMPLE_VARIABLES = '{"userId": "user-1", "audiences": null}'
EXAMPLE_HEADERS = '{"x-api-key": "<your public API key>"}'

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>Passthrough GraphiQL</title>
    <style>
      body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
      #graphiql { height: 100vh; }
    </style>
    <script crossorigin src="https://unpkg.com/react@18.2.0/umd/react.production.min.js"
      integrity="sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8"></script>
    <script crossorigin src="https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js"
      integrity="sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh"></script>
    <link crossorigin rel="stylesheet" href="https://unpkg.com/graphiql@3.8.3/graphiql.min.css"
      integrity="sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM" />
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL (from unpkg.com)...</div>
    <script crossorigin src="https://unpkg.com/graphiql@3.8.3/graphiql.min.js"
      integrity="sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie"></script>
    <script>
      const fetcher = GraphiQL.createFetcher({ url: window.location.href.split("?")[0] });
      ReactDOM.createRoot(document.getElementById("graphiql")).render(
        React.createElement(GraphiQL, {
          fetcher: fetcher,
          defaultQuery: __QUERY__,
          defaultVariables: __VARIABLES__,
          defaultHeaders: __HEADERS__,
          isHeadersEditorEnabled: true,
          shouldPersistHeaders: true,
          defaultEditorToolsVisibility: true,
        }),
      );
    </script>
  </body>
</html>
"""


def _js_string(text: str) -> str:
    # JSON is a JavaScript string literal; "</" must not close the <script> element.
    return json.dumps(text).replace("</", "<\\/")


GRAPHIQL_HTML = (
    _PAGE.replace("__QUERY__", _js_string(EXAMPLE_QUERY))
    .replace("__VARIABLES__", _js_string(EXAMPLE_VARIABLES))
    .replace("__HEADERS__", _js_string(EXAMPLE_HEADERS))
)
