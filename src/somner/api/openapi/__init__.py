"""The OpenAPI 3.1 document of every route (`document`), from the request schemas the routes validate with and
the response shapes in `responses`; `catalog` says which schema belongs to which route; `routes` serves it."""
