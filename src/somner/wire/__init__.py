"""Wire formats: the dialects' JSON shapes and their translation to and from `somner.core`.

(A change to the package map in DESIGN.md: the OpenAI dialect is spoken at three places, not one. Clients speak
it to the gateway (`api/openai`), the gateway speaks it to engines (`models/backends`), and the engine worker
serves it (`engine/server`). Its schemas and codecs therefore live here, below all three, instead of inside
`api/openai/`; `api/` keeps the routes and the error rendering.)

`decode` turns wire data into core types, `encode` turns core types into wire data, in both directions of
travel (requests and responses).
"""
