"""The CloudWatch agent's JSON config for each role, built as data from the typed config.

Built in Python rather than templated: it is JSON, it is validated against the agent's
own schema in the tests, and a template could not tell a typo from a setting.
"""

from __future__ import annotations

from typing import Any

from bakery.config import BakeryConfig

# Host metrics every role reports; the agent fills in InstanceId at run time.
_HOST_METRICS: dict[str, Any] = {
    "namespace": "CWAgent",
    "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
    "metrics_collected": {
        "cpu": {"measurement": ["cpu_usage_idle", "cpu_usage_iowait"], "totalcpu": True},
        "mem": {"measurement": ["mem_used_percent"]},
        "disk": {"measurement": ["used_percent"], "resources": ["/"]},
    },
}

# Log files each role ships to its log group (stream per instance).
_ROLE_LOG_FILES: dict[str, list[str]] = {
    "backend": ["/var/log/bakery/fastapi-otel.log"],
    "frontend": ["/var/log/nginx/access.log", "/var/log/nginx/error.log"],
    "database": ["/var/log/mysql/error.log"],
}


def agent_config(cfg: BakeryConfig) -> dict[str, Any]:
    """The agent config for the role; the backend's enables Application Signals."""
    collect_list = [
        {
            "file_path": path,
            "log_group_name": cfg.service.log_group,
            "log_stream_name": "{instance_id}/" + path.rsplit("/", 1)[-1],
            "retention_in_days": 30,
        }
        for path in _ROLE_LOG_FILES[cfg.role]
    ]
    logs: dict[str, Any] = {"logs_collected": {"files": {"collect_list": collect_list}}}
    config: dict[str, Any] = {
        "agent": {"metrics_collection_interval": 60, "run_as_user": "cwagent"},
        "metrics": _HOST_METRICS,
        "logs": logs,
    }
    if cfg.role == "backend":
        # Application Signals needs both: traces (spans from the app) and the RED
        # metrics the agent derives from them. The original guide enabled neither.
        config["traces"] = {"traces_collected": {"application_signals": {}}}
        logs["metrics_collected"] = {"application_signals": {}}
    return config
