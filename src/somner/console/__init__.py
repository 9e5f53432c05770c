"""The web console at `/ui`: server-rendered pages and vendored static files, nothing else.

The pages hold no data and need no key: the browser keeps the API key in `sessionStorage` and calls the same
authenticated JSON API as any client (the admin API, the OpenAI routes, `/health`, `/metrics`) with it as a bearer
header. No cookie is ever set, so there is no cross-site request to forge; every page is served with a strict
Content-Security-Policy (scripts and styles from this server only, no inline code, no other host).
"""
