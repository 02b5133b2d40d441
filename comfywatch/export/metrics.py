"""Every metric comfywatch exposes, defined once. Nothing else spells a metric name.

``ALL`` is what ``/metrics`` shows; ``/probe`` shows a target's series and its own ``PROBE`` pair.
``docs/metrics.md`` documents these with their source endpoints; a test checks it lists all of ``ALL``.
"""

from __future__ import annotations

from comfywatch.export.exposition import MetricDef
from comfywatch.parse.queue import MAX_QUEUE_ITEMS
from comfywatch.parse.text import MAX_ARGS, MAX_CHARS, MAX_DEVICES

__all__ = ["ALL", "CLOUD", "DAEMON", "PROBE", "TARGET"]

_BG = " Polled in the background; see comfywatch_check_last_success_timestamp_seconds for staleness."

UP = MetricDef("comfyui_up", "gauge", "1 if the latest poll of the target succeeded, 0 if it failed." + _BG)
TARGET_INFO = MetricDef("comfyui_target_info", "info", "Configured target.", ("kind", "url"))
INFO = MetricDef(
    "comfyui_info", "info", "ComfyUI server build, from /system_stats.",
    ("version", "python_version", "pytorch_version", "os"),
)
RAM_TOTAL = MetricDef("comfyui_ram_total_bytes", "gauge", "Server RAM total, from /system_stats." + _BG)
RAM_FREE = MetricDef("comfyui_ram_free_bytes", "gauge", "Server RAM available, from /system_stats." + _BG)
_DEV = ("device", "type", "index")
VRAM_TOTAL = MetricDef("comfyui_device_vram_total_bytes", "gauge", "Device memory total (RAM on CPU devices).", _DEV)
VRAM_FREE = MetricDef("comfyui_device_vram_free_bytes", "gauge", "Device memory free (RAM on CPU devices).", _DEV)
TORCH_VRAM_TOTAL = MetricDef(
    "comfyui_device_torch_vram_total_bytes", "gauge", "Memory reserved by torch's allocator.", _DEV
)
TORCH_VRAM_FREE = MetricDef(
    "comfyui_device_torch_vram_free_bytes", "gauge", "Reserved but unused memory in torch's allocator.", _DEV
)
QUEUE_RUNNING = MetricDef("comfyui_queue_running", "gauge", "Jobs running now." + _BG)
QUEUE_PENDING = MetricDef("comfyui_queue_pending", "gauge", "Jobs waiting in the queue." + _BG)
QUEUE_RUNNING_SECONDS = MetricDef(
    "comfyui_queue_running_seconds", "gauge", "Age of the running job (since comfywatch first saw it running)."
)
QUEUE_OLDEST_PENDING = MetricDef(
    "comfyui_queue_oldest_pending_seconds", "gauge", "Age of the oldest pending job (0 when none)."
)
QUEUE_STALLED = MetricDef(
    "comfyui_queue_stalled", "gauge", "1 if the same job has been running longer than stall_after with no progress."
)
WORKER_NOT_CONSUMING = MetricDef(
    "comfyui_queue_worker_not_consuming", "gauge",
    "1 if jobs are pending but nothing has been running for several consecutive polls.",
)
JOBS = MetricDef("comfyui_jobs_total", "counter", "Finished jobs seen in /history or /api/jobs (all users).")
JOB_FAILURES = MetricDef("comfyui_job_failures_total", "counter", "Finished jobs that failed, by reason.", ("reason",))
JOB_DURATION = MetricDef(
    "comfyui_job_duration_seconds", "histogram", "Job execution time from the server's own timestamps."
)
REQUEST_DURATION = MetricDef(
    "comfyui_request_duration_seconds", "histogram", "Duration of comfywatch's requests to the target.",
    ("endpoint",),
)
REQUESTS = MetricDef(
    "comfyui_requests_total", "counter", "Requests made to the target by HTTP status (none = no response).",
    ("endpoint", "code"),
)
REQUEST_FAILURES = MetricDef(
    "comfyui_request_failures_total", "counter", "Failed requests to the target, by reason.", ("endpoint", "reason")
)
HTTP_PHASE = MetricDef(
    "comfyui_http_phase_seconds", "gauge",
    "HTTP phases: processing/transfer of the latest /system_stats poll; dns/connect/tls of the latest "
    "fresh-connection network check (every 5 min).", ("phase",),
)
TLS_NOT_AFTER = MetricDef(
    "comfyui_tls_cert_not_after_timestamp_seconds", "gauge", "Expiry of the target's TLS certificate (Unix time)."
)
CANARY_SUCCESS = MetricDef("comfyui_canary_success", "gauge", "1 if the latest canary run succeeded.", ("canary",))
CANARY_RUNS = MetricDef("comfyui_canary_runs_total", "counter", "Canary runs (skips excluded).", ("canary",))
CANARY_FAILURES = MetricDef(
    "comfyui_canary_failures_total", "counter", "Failed canary runs by reason.", ("canary", "reason")
)
CANARY_SKIPPED = MetricDef(
    "comfyui_canary_skipped_total", "counter", "Canary runs skipped (busy queue, budget, back-off).", ("canary",)
)
CANARY_PHASE = MetricDef(
    "comfyui_canary_phase_seconds", "gauge", "Phase durations of the latest canary run.", ("canary", "phase")
)
CANARY_SERVER_SECONDS = MetricDef(
    "comfyui_canary_server_execution_seconds", "gauge",
    "Execution time of the latest canary by the server's own timestamps.", ("canary",),
)
CANARY_WEBSOCKET_OK = MetricDef(
    "comfyui_canary_websocket_ok", "gauge",
    "1 if the latest canary got its events over the WebSocket, 0 if it had to fall back to polling.", ("canary",),
)
CANARY_DURATION = MetricDef(
    "comfyui_canary_duration_seconds", "histogram", "Total canary duration (submit to output verified).",
    ("canary",),
)
CANARY_LAST_SUCCESS = MetricDef(
    "comfyui_canary_last_success_timestamp_seconds", "gauge", "When the canary last succeeded.", ("canary",)
)

CLOUD_BALANCE = MetricDef(
    "comfy_cloud_balance_usd", "gauge", "Comfy Cloud credit balance in USD (absent when unknown)." + _BG
)
CLOUD_EFFECTIVE_BALANCE = MetricDef(
    "comfy_cloud_effective_balance_usd", "gauge", "Balance minus pending charges in USD; can be negative." + _BG
)
CLOUD_HAS_FUNDS = MetricDef("comfy_cloud_has_funds", "gauge", "1 if Comfy Cloud says the account has funds.")
CLOUD_SUB_ACTIVE = MetricDef("comfy_cloud_subscription_active", "gauge", "1 if the subscription is active.")
CLOUD_SUB_INFO = MetricDef(
    "comfy_cloud_subscription_info", "info", "Subscription tier and status.", ("tier", "status")
)
CLOUD_MAX_CONCURRENT = MetricDef(
    "comfy_cloud_max_concurrent_jobs", "gauge", "Concurrent jobs the plan allows (from /api/features)."
)
CLOUD_JOBS_STUCK = MetricDef(
    "comfy_cloud_jobs_stuck", "gauge", "Jobs in a waiting state for longer than stall_after."
)
CLOUD_RETRY_AFTER = MetricDef(
    "comfy_cloud_retry_after_seconds", "gauge", "Seconds until checks resume after a 429 Retry-After (0 = none)."
)
CLOUD_CANARY_TODAY = MetricDef(
    "comfy_cloud_canary_runs_today", "gauge", "Cloud canary runs today (UTC), against max_runs_per_day."
)

WORKFLOW_VALID = MetricDef(
    "comfyui_workflow_valid", "gauge",
    "1 if the watched workflow passes ComfyUI's validation against the target's live node catalogue, 0 if the "
    "server would reject it.", ("workflow",),
)
WORKFLOW_PROBLEMS = MetricDef(
    "comfyui_workflow_problems", "gauge",
    "Problems the server would report for the watched workflow, by ComfyUI's error type (none when valid).",
    ("workflow", "type"),
)

NODE_CLASSES = MetricDef("comfyui_node_classes", "gauge", "Node classes the server offers, from /object_info.")
CUSTOM_NODE_PACKS = MetricDef(
    "comfyui_custom_node_packs", "gauge", "Custom node packs providing node classes (python_module custom_nodes.*)."
)
MODELS = MetricDef("comfyui_models", "gauge", "Model files per folder, from /models/{folder}.", ("folder",))
CATALOG_INFO = MetricDef(
    "comfyui_catalog_info", "info",
    "Fingerprints of the node catalogue (classes, packs, inputs, options) and of the model lists: servers with "
    "equal values offer the same.", ("nodes_hash", "models_hash"),
)

IMPORT_FAILURES = MetricDef(
    "comfyui_custom_node_import_failures", "gauge",
    "1 per node pack that failed to import at the server's last start, from its log (kind: custom for a "
    "custom_nodes pack, builtin for ComfyUI's own optional modules).", ("pack", "kind"),
)

BUILD_INFO = MetricDef("comfywatch_build_info", "info", "comfywatch version.", ("version",))
CHECK_DURATION = MetricDef(
    "comfywatch_check_duration_seconds", "gauge", "Duration of the latest run of a check.", ("target", "check")
)
CHECK_OVERRUNS = MetricDef(
    "comfywatch_check_overruns_total", "counter",
    "Check runs that hit their timeout or were skipped because the previous run was still going.",
    ("target", "check"),
)
CHECK_SKIPS = MetricDef(
    "comfywatch_check_skips_total", "counter",
    "Check runs skipped without a request because of the account's limits (Comfy Cloud targets only).",
    ("target", "check", "reason"),
)
CHECK_LAST_SUCCESS = MetricDef(
    "comfywatch_check_last_success_timestamp_seconds", "gauge", "When a check last succeeded.", ("target", "check")
)
TARGETS = MetricDef("comfywatch_targets", "gauge", "Targets this replica watches, by kind.", ("kind",))
WEBSOCKET_CONNECTED = MetricDef(
    "comfywatch_websocket_connected", "gauge", "1 while the monitoring WebSocket to the target is open.", ("target",)
)
RELOAD_SUCCESS = MetricDef(
    "comfywatch_config_last_reload_success", "gauge", "1 if the last configuration (re)load succeeded."
)
RELOAD_TIMESTAMP = MetricDef(
    "comfywatch_config_last_reload_timestamp_seconds", "gauge", "When the configuration was last (re)loaded."
)
SHARD_INFO = MetricDef("comfywatch_shard_info", "info", "This replica's shard.", ("shard", "shards"))
TRUNCATIONS = MetricDef(
    "comfywatch_truncations_total", "counter",
    f"Server values cut to their bound: strings longer than {MAX_CHARS} characters, devices beyond {MAX_DEVICES}, "
    f"command-line arguments beyond {MAX_ARGS} per target and queue entries beyond {MAX_QUEUE_ITEMS} per list.",
    ("what",),
)
ENCODE_FAILURES = MetricDef(
    "comfywatch_encode_failures_total", "counter",
    "Encodings of a target's lines that failed; that target shows only comfyui_up 0 until its values change.",
)
POLLS = MetricDef(
    "comfywatch_polls_total", "counter",
    "Polls of local targets started (a target's system, queue and jobs checks, run together every interval).",
)
QUIET_POLLS = MetricDef(
    "comfywatch_quiet_polls_total", "counter",
    "Polls that asked the target nothing: its monitoring WebSocket showed it up and its queue unchanged since the "
    "last full read.",
)
TASKS = MetricDef("comfywatch_asyncio_tasks", "gauge", "asyncio tasks alive in the daemon (leak detection).")
RSS = MetricDef("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
OPEN_FDS = MetricDef("process_open_fds", "gauge", "Number of open file descriptors.")

PROBE_SUCCESS = MetricDef("comfyui_probe_success", "gauge", "1 if every check of the probe succeeded.")
PROBE_DURATION = MetricDef("comfyui_probe_duration_seconds", "gauge", "How long the probe took.")

TARGET: tuple[MetricDef, ...] = (
    UP, TARGET_INFO, INFO, RAM_TOTAL, RAM_FREE, VRAM_TOTAL, VRAM_FREE, TORCH_VRAM_TOTAL, TORCH_VRAM_FREE,
    QUEUE_RUNNING, QUEUE_PENDING, QUEUE_RUNNING_SECONDS, QUEUE_OLDEST_PENDING, QUEUE_STALLED, WORKER_NOT_CONSUMING,
    JOBS, JOB_FAILURES, JOB_DURATION, REQUEST_DURATION, REQUESTS, REQUEST_FAILURES, HTTP_PHASE, TLS_NOT_AFTER,
    CANARY_SUCCESS, CANARY_RUNS, CANARY_FAILURES, CANARY_SKIPPED, CANARY_PHASE, CANARY_SERVER_SECONDS,
    CANARY_WEBSOCKET_OK, CANARY_DURATION, CANARY_LAST_SUCCESS, WORKFLOW_VALID, WORKFLOW_PROBLEMS, NODE_CLASSES,
    CUSTOM_NODE_PACKS, MODELS, CATALOG_INFO, IMPORT_FAILURES,
)
CLOUD: tuple[MetricDef, ...] = (
    CLOUD_BALANCE, CLOUD_EFFECTIVE_BALANCE, CLOUD_HAS_FUNDS, CLOUD_SUB_ACTIVE, CLOUD_SUB_INFO, CLOUD_MAX_CONCURRENT,
    CLOUD_JOBS_STUCK, CLOUD_RETRY_AFTER, CLOUD_CANARY_TODAY,
)
DAEMON: tuple[MetricDef, ...] = (
    BUILD_INFO, CHECK_DURATION, CHECK_OVERRUNS, CHECK_SKIPS, CHECK_LAST_SUCCESS, TARGETS, WEBSOCKET_CONNECTED,
    RELOAD_SUCCESS, RELOAD_TIMESTAMP, SHARD_INFO, TRUNCATIONS, ENCODE_FAILURES, POLLS, QUIET_POLLS, TASKS, RSS,
    OPEN_FDS,
)
ALL: tuple[MetricDef, ...] = TARGET + CLOUD + DAEMON
#: Only ``/probe`` answers these, beside the probed target's series.
PROBE: tuple[MetricDef, ...] = (PROBE_SUCCESS, PROBE_DURATION)
