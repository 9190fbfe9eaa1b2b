"""An OpenAI-compatible embedding server with dynamic batching (``decoder2vec serve``).

FastAPI, uvicorn and prometheus-client are an optional extra (``pip install 'decoder2vec[serve]'``), so
nothing here imports them until the server is built.
"""

from decoder2vec.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from decoder2vec.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
