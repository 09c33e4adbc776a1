"""The GraphiQL page served by ``GET /v3/graphql``, and the files it loads.

The page itself is static and carries no data, so it is served without an API key; the queries
it sends need one, in the headers editor (pre-filled with an ``x-api-key`` placeholder). GraphiQL
and React ship inside the package (pyapp/web/graphql/static/graphiql, ASSETS.md there says which versions,
with their licences) and are served by the server itself, so the page works offline. The page keeps
its state in the tab's sessionStorage, never in localStorage, and does not persist headers: a private
key typed into it does not stay in the browser.
"""

from __future__ import annotations

import json

from pyapp.web.shipped_files import Asset, ShippedFiles

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

ASSETS_PATH = "/v3/graphql/assets"


ASSETS = {
    "react.production.min.js": Asset(
        "react-18.2.0", "text/javascript", "tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8"),
    "react-dom.production.min.js": Asset(
        "react-dom-18.2.0", "text/javascript", "bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh"),
    "graphiql.min.js": Asset(
        "graphiql-3.8.3", "text/javascript", "HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie"),
    "graphiql.min.css": Asset(
        "graphiql-3.8.3", "text/css", "Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM"),
}


SHIPPED = ShippedFiles("pyapp.web.graphql", "static/graphiql", ASSETS_PATH, ASSETS, "GraphiQL page")


_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>Passthrough GraphiQL</title>
    <style>
      body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
      #graphiql { height: 100vh; }
    </style>
    __REACT__
    __REACT_DOM__
    __CSS__
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL...</div>
    __GRAPHIQL__
    <script>
      const fetcher = GraphiQL.createFetcher({ url: window.location.href.split("?")[0].split("#")[0] });
      ReactDOM.createRoot(document.getElementById("graphiql")).render(
        React.createElement(GraphiQL, {
          fetcher: fetcher,
          defaultQuery: __QUERY__,
          defaultVariables: __VARIABLES__,
          defaultHeaders: __HEADERS__,
          isHeadersEditorEnabled: true,
          // a key typed into the headers must not stay in the browser: nothing goes to localStorage (the
          // query history would keep each query's headers there), the tab's session storage holds the rest
          shouldPersistHeaders: false,
          storage: window.sessionStorage,
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
    _PAGE.replace("__REACT__", SHIPPED.script_tag("react.production.min.js"))
    .replace("__REACT_DOM__", SHIPPED.script_tag("react-dom.production.min.js"))
    .replace("__CSS__", SHIPPED.stylesheet_tag("graphiql.min.css"))
    .replace("__GRAPHIQL__", SHIPPED.script_tag("graphiql.min.js"))
    .replace("__QUERY__", _js_string(EXAMPLE_QUERY))
    .replace("__VARIABLES__", _js_string(EXAMPLE_VARIABLES))
    .replace("__HEADERS__", _js_string(EXAMPLE_HEADERS))
)


GRAPHIQL_ROUTES = [SHIPPED.route("graphiql_asset")]
