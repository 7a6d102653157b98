"""The REST API (``/api/v1``): FastAPI routers, request/response schemas, auth dependencies."""
