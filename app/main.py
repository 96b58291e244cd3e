"""The ASGI application: ``uvicorn app.main:app``."""

from app.factory import create_app, show_service_logs
from app.settings import Settings

settings = Settings()
show_service_logs(settings.log_level)
app = create_app(settings)
