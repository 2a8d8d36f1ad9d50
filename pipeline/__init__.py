"""Attention-based image recognition pipeline: one module per stage, plus model and config."""

import os

# Telemetry off for every tool: nothing here can reach it, and some of it slows or clutters runs.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",  # timm's hub: nothing is downloaded, ever
}.items():
    os.environ.setdefault(_name, _value)
