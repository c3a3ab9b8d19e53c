"""Settings: every knob of the server, read from the environment and `.env`.

Each field is documented in `.env.example`; the defaults run the server with no
services at all (SQLite under ./data, in-process bus, Ollama or the offline engine).
"""

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])

    # Store
    data_dir: Path = Path("data")
    database_url: str | None = None
    database_statement_cache_size: int | None = Field(default=None, ge=0)
    database_pool_min_size: int = Field(default=1, ge=0)
    database_pool_max_size: int = Field(default=10, ge=1)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    migrate_on_start: bool = True
    supabase_url: str | None = None
    supabase_key: str | None = None

    # Bus
    redis_url: str | None = None
    redis_prefix: str = "parley"
    redis_stream_maxlen: int = Field(default=20_000, ge=100)
    redis_lock_ttl_seconds: float = Field(default=30.0, gt=0)

    # LLM
    llm_provider: Literal["auto", "ollama", "openai", "offline"] = "auto"
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5:7b-instruct"
    ollama_timeout_seconds: float = 120.0
    ollama_keep_alive: str = "10m"
    ollama_num_ctx: int = 8192
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "gpt-4o-mini"
    llm_probe_timeout_seconds: float = 2.0
    # Sampling temperature of the agents' replies (None: the server's own default).
    llm_temperature: float | None = Field(default=0.3, ge=0, le=2)
    llm_probe_cache_seconds: float = Field(default=15.0, ge=0)
    offline_token_delay_seconds: float = 0.03

    # Runs
    max_message_chars: int = 4000
    run_timeout_seconds: float = 180.0
    run_heartbeat_seconds: float = 5.0
    run_log_ttl_seconds: float = 900.0
    sse_ping_seconds: int = 15
    agent_max_iters: int = 6
    agent_tools: bool = False
    extraction_timeout_seconds: float = Field(default=60.0, gt=0)
    max_handoffs_per_run: int = 3

    # Integrations (off until configured)
    crm_api_key: str | None = None
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_pipeline: str = "default"
    hubspot_deal_stage: str = "qualifiedtobuy"
    hubspot_booked_stage: str = "appointmentscheduled"
    hubspot_deal_id_property: str | None = None
    email_api_key: str | None = None
    email_from: str | None = None
    email_from_name: str = "Parley"
    sales_inbox: str | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    calendar_api_key: str | None = None
    google_calendar_id: str | None = None
    google_calendar_subject: str | None = None
    google_calendar_invite_attendees: bool = False
    google_calendar_base_url: str = "https://www.googleapis.com"
    business_time_zone: str = "UTC"
    business_hours_start: str = "09:00"
    business_hours_end: str = "17:00"
    business_days: str = "0,1,2,3,4"
    meeting_minutes: int = 30
    slot_search_days: int = 5
    meeting_min_notice_minutes: int = 60
    integration_timeout_seconds: float = 5.0
    integration_deadline_seconds: float = 8.0
    integration_max_attempts: int = 3
    integration_breaker_failures: int = 5
    integration_breaker_cooldown_seconds: float = 30.0
    # Side effects a day (mail, calendar, crm), per conversation, visitor address and site.
    caps_per_conversation: dict[str, int] = Field(
        default_factory=lambda: {"mail": 5, "calendar": 4, "crm": 6}
    )
    caps_per_address: dict[str, int] = Field(
        default_factory=lambda: {"mail": 5, "calendar": 4, "crm": 10}
    )
    caps_per_site: dict[str, int] = Field(
        default_factory=lambda: {"mail": 500, "calendar": 200, "crm": 1000}
    )
    approval_required_tools: list[str] = Field(default_factory=list)
    approval_timeout_seconds: float = 600.0

    # Security
    jwt_secret: str | None = None
    jwt_audience: str | None = None
    jwks_url: str | None = None
    site_keys: dict[str, list[str]] = Field(default_factory=dict)
    visitor_token_secret: str | None = None

    # Webhooks
    webhook_max_attempts: int = Field(default=5, ge=1)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0)
    webhook_queue_size: int = Field(default=1000, ge=1)
    webhook_allow_private: bool = False
    webhook_secret_grace_seconds: float = Field(default=86400.0, ge=0)

    # Limits (0 = no limit)
    rate_limits_enabled: bool = True
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    rate_limit_ip_messages: int = Field(default=30, ge=0)
    rate_limit_site_key_messages: int = Field(default=600, ge=0)
    rate_limit_conversation_messages: int = Field(default=20, ge=0)
    max_streams_per_ip: int = Field(default=20, ge=0)
    max_sockets_per_ip: int = Field(default=10, ge=0)
    conversation_tokens_per_day: int = Field(default=200_000, ge=0)
    send_timeout_seconds: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    max_ws_frame_bytes: int = Field(default=65_536, ge=1024)
    max_metadata_bytes: int = Field(default=8192, ge=0)
    llm_context_size: int = Field(default=32_768, ge=512)
    context_trigger_ratio: float = Field(default=0.8, gt=0.1, le=0.9)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    # Observability and privacy
    log_format: Literal["text", "json"] = "text"
    log_redact_pii: bool = True
    retention_days: float = Field(default=0, ge=0)
    # OpenTelemetry's standard variables: traces are exported only when one is set.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = "parley"

    @field_validator("ollama_host")
    @classmethod
    def _ollama_host_with_scheme(cls, value: str) -> str:
        """Accept Ollama's own OLLAMA_HOST forms (`127.0.0.1:11434`, `:11434`)."""
        value = value.strip().rstrip("/")
        if "://" not in value:
            value = f"http://{'127.0.0.1' if value.startswith(':') else ''}{value}"
        return value

    @cached_property
    def sqlite_path(self) -> Path:
        return self.data_dir / "parley.db"
