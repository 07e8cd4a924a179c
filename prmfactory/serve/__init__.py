"""serve: a trained PRM over HTTP for online RL (FastAPI + uvicorn, dynamic batching)."""
