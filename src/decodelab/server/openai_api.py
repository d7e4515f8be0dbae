"""OpenAI-compatible routes (filled in next)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1")
