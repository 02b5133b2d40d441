// Alerts about ComfyUI targets. comfyui_up and the other gauges are raw results of the latest poll;
// debouncing is done with `for:`. Counter-based alerts use a rate window shorter than their `for:`, so one
// failure (a blip) can never keep an expression true long enough to fire. Counter thresholds are counts
// (">= 2") because increase() extrapolates: one event reads as ~1.01.
local lib = import 'lib.libsonnet';

function(config) lib.group(config, 'comfyui', [
  lib.rule(
    config, 'ComfyUIDown',
    'comfyui_up{%(s)s} == 0',
    'ComfyUI target {{ $labels.target }} is unreachable',
    'comfywatch has failed to poll {{ $labels.target }} for %(forText)s (comfyui_up = {{ $value }}). '
    + 'Run `comfywatch doctor {{ $labels.target }}` to see which step fails.',
  ),
  // A target counts as failing when it is down, or when its canaries fail as ComfyUICanaryFailing sees it: the
  // latest run of every canary failed and enough runs failed in that alert's window (one failed run of an
  // hourly canary holds comfyui_canary_success at 0 for an hour, and must not count toward a page). Failed
  // runs are counted as ComfyUICanaryFailing counts them (lib.canaryFailedRuns), summed over the target's canaries.
  // Aggregating without the per-target labels (target and instance by default) leaves one alert per job and
  // cluster, however many comfywatch shards (/metrics instances) or probed addresses (/probe instances)
  // report the fleet.
  lib.rule(
    config, 'ComfyUIFleetDegraded',
    // The canary condition is ComfyUICanaryFailing's: its window and count, spelled once in _config.
    std.strReplace(std.strReplace(|||
      (
        count without (%(perTargetLabels)s) (
          (comfyui_up{%(s)s} == 0)
          or
          (
            (max without (canary) (comfyui_canary_success{%(s)s}) == 0)
            and on (job, instance, target)
            (sum without (canary) CANARY_FAILED_RUNS >= CANARY_FAILURES)
          )
        )
        / count without (%(perTargetLabels)s) (comfyui_up{%(s)s})
      ) >= %(share)s
      and
      count without (%(perTargetLabels)s) (comfyui_up{%(s)s}) >= %(minTargets)s
    |||, 'CANARY_FAILED_RUNS', lib.canaryFailedRuns('%(s)s', config.alerts.ComfyUICanaryFailing.window)),
    'CANARY_FAILURES', std.toString(config.alerts.ComfyUICanaryFailing.failures)),
    'ComfyUI fleet {{ $labels.job }}{{ with $labels.%(cluster)s }} in %(cluster)s {{ . }}{{ end }} is degraded',
    '{{ $value | humanizePercentage }} of the targets of job {{ $labels.job }}{{ with $labels.%(cluster)s }} '
    + 'in %(cluster)s {{ . }}{{ end }} are down or fail all their canaries (threshold %(sharePercent)s of at least '
    + '%(minTargets)s targets): an outage beyond one host, such as a network partition, a shared dependency or a bad rollout.',
  ),
  lib.rule(
    config, 'ComfyUIQueueStalled',
    'comfyui_queue_running_seconds{%(s)s} and (comfyui_queue_stalled{%(s)s} == 1)',
    'The running job on {{ $labels.target }} has stopped making progress',
    'The job running on {{ $labels.target }} has been running for {{ $value | humanizeDuration }} '
    + 'with no progress events; every job queued behind it is blocked.',
  ),
  lib.rule(
    config, 'ComfyUIQueueBacklog',
    'comfyui_queue_oldest_pending_seconds{%(s)s} > %(oldestPendingSeconds)s',
    'Jobs on {{ $labels.target }} wait more than %(oldestPendingText)s to start',
    'The oldest pending job on {{ $labels.target }} has waited {{ $value | humanizeDuration }}; '
    + 'the queue grows faster than the server works it off.',
  ),
  lib.rule(
    config, 'ComfyUIWorkerNotConsuming',
    'comfyui_queue_pending{%(s)s} and (comfyui_queue_worker_not_consuming{%(s)s} == 1)',
    '{{ $labels.target }} has queued jobs but runs none',
    '{{ $value }} job(s) are pending on {{ $labels.target }} and nothing has been running for '
    + 'several polls: the execution worker is stuck or dead while the HTTP server still answers.',
  ),
  // success == 0 says the latest run failed; the count over the window makes one failed run (a blip, or
  // a single failure of an hourly Cloud canary) insufficient on its own. Failed runs are runs minus successes,
  // not comfyui_canary_failures_total, whose series of a reason appears with its first failure: increase()
  // would miss the first failure of every reason (lib.canaryFailedRuns).
  lib.rule(
    config, 'ComfyUICanaryFailing',
    std.strReplace(|||
      FAILED_RUNS >= %(failures)s
      and
      (comfyui_canary_success{%(s)s} == 0)
    |||, 'FAILED_RUNS', lib.canaryFailedRuns('%(s)s', '%(window)s')),
    'Canary {{ $labels.canary }} fails on {{ $labels.target }}',
    'The {{ $labels.canary }} canary workflow on {{ $labels.target }} failed its latest runs '
    + '({{ $value | printf "%%.0f" }} failed runs in the last %(windowText)s): the server does not complete work end to end.',
  ),
  // Canary runs and skips happen once per interval whether they succeed or not, so their rate over the
  // window measures the interval: age of the last success x runs per second = intervals without a success.
  // A canary that never succeeded since comfywatch started has no last success: it counts once its latest
  // run failed and enough runs or skips passed.
  lib.rule(
    config, 'ComfyUICanaryNotRunning',
    |||
      (
        (time() - comfyui_canary_last_success_timestamp_seconds{%(s)s})
        * (rate(comfyui_canary_runs_total{%(s)s}[%(window)s]) + rate(comfyui_canary_skipped_total{%(s)s}[%(window)s]))
        > %(intervals)s
      )
      or
      (
        (increase(comfyui_canary_runs_total{%(s)s}[%(window)s]) + increase(comfyui_canary_skipped_total{%(s)s}[%(window)s]) >= %(intervals)s)
        and (comfyui_canary_success{%(s)s} == 0)
        unless comfyui_canary_last_success_timestamp_seconds{%(s)s}
      )
    |||,
    'Canary {{ $labels.canary }} on {{ $labels.target }} has not succeeded for %(intervals)s intervals',
    'The {{ $labels.canary }} canary on {{ $labels.target }} has not succeeded for {{ $value | printf "%%.0f" }} '
    + 'of its intervals (runs failed or were skipped: busy queue, request budget, Retry-After back-off); '
    + 'nothing proves the server completes work end to end.',
  ),
  // Only successful runs are observed in comfyui_canary_duration_seconds, so a timed-out run is
  // CanaryFailing's, never CanarySlow's. The quantile over several runs keeps one slow run of an hourly
  // canary from firing it.
  lib.rule(
    config, 'ComfyUICanarySlow',
    |||
      histogram_quantile(%(quantile)s, rate(comfyui_canary_duration_seconds_bucket{%(s)s}[%(window)s])) > %(seconds)s
      and
      increase(comfyui_canary_duration_seconds_count{%(s)s}[%(window)s]) >= %(minRuns)s
    |||,
    'Canary {{ $labels.canary }} on {{ $labels.target }} takes more than %(seconds)s s',
    'The {{ $labels.canary }} canary runs on {{ $labels.target }} took {{ $value | humanizeDuration }} or more '
    + '(quantile %(quantile)s of the successful runs in the last %(windowText)s, threshold %(seconds)ss).',
  ),
  lib.rule(
    config, 'ComfyUIAuthFailing',
    |||
      sum without (reason) (
        target_endpoint_reason:comfyui_request_failures:ratio_rate5m{%(s)s, reason=~"auth|forbidden"}
      ) > %(ratio)s
    |||,
    "{{ $labels.target }} rejects comfywatch's credentials (401/403)",
    '{{ $value | humanizePercentage }} of requests to the {{ $labels.endpoint }} endpoint of '
    + '{{ $labels.target }} failed with 401 or 403 over the last 5 minutes.',
  ),
  // 429s are counted over a window, not as a rate: while a Retry-After pause runs comfywatch sends nothing,
  // so 429s every 10 minutes leave most 5-minute rate windows empty. A single pause that outlasts `for` (one
  // 429 an hour, each asking for an hour) fires through the Retry-After gauge, which only Cloud targets have;
  // the count alone covers local targets.
  lib.rule(
    config, 'ComfyUIRateLimited',
    |||
      (sum without (endpoint, reason) (increase(comfyui_request_failures_total{%(s)s, reason="rate_limited"}[%(window)s])) >= %(responses)s)
      or
      (comfy_cloud_retry_after_seconds{%(s)s} > 0)
    |||,
    '{{ $labels.target }} rate-limits comfywatch (429)',
    'Requests from comfywatch to {{ $labels.target }} have been answered 429 (rate limited) for %(forText)s: '
    + 'at least %(responses)s in every %(windowText)s, or a Retry-After pause still running (now '
    + '{{ $value | printf "%%.0f" }}: 429s in the window, or seconds of pause left). While a pause runs, the '
    + 'checks of a Cloud account are skipped.',
  ),
  lib.rule(
    config, 'ComfyUIServerErrors',
    'target_reason:comfyui_request_failures:ratio_rate5m{%(s)s, reason="server_error"} > %(ratio)s',
    '{{ $labels.target }} answers with 5xx errors',
    '{{ $value | humanizePercentage }} of requests to {{ $labels.target }} failed with a 5xx status '
    + 'over the last 5 minutes (threshold %(ratioPercent)s).',
  ),
  lib.rule(
    config, 'ComfyUIJobFailureRateHigh',
    |||
      (target:comfyui_job_failures:ratio_rate30m{%(s)s} > %(ratio)s)
      and
      (target:comfyui_job_failures:increase30m{%(s)s} >= %(failures)s)
    |||,
    'Many jobs fail on {{ $labels.target }}',
    '{{ $value | humanizePercentage }} of the jobs that finished on {{ $labels.target }} in the '
    + 'last 30 minutes failed (execution errors, out of memory or lost; cancelled jobs not counted).',
  ),
  lib.rule(
    config, 'ComfyUIOutOfMemory',
    'sum without (reason) (increase(comfyui_job_failures_total{%(s)s, reason="oom"}[%(window)s])) >= %(failures)s',
    'Jobs on {{ $labels.target }} run out of memory',
    '{{ $value | printf "%%.0f" }} jobs on {{ $labels.target }} failed with an out-of-memory error '
    + 'in the last %(windowText)s.',
  ),
  lib.rule(
    config, 'ComfyUIVRAMLow',
    'target_device:comfyui_device_vram_free:ratio{%(s)s} < %(freeRatio)s',
    '{{ $labels.target }} has less than %(freeRatioPercent)s VRAM free on {{ $labels.device }}',
    'Only {{ $value | humanizePercentage }} of the memory of {{ $labels.device }} on '
    + '{{ $labels.target }} has been free for %(forText)s; the next large model or batch may fail '
    + 'with out of memory.',
  ),
  lib.rule(
    config, 'ComfyUIRAMLow',
    'comfyui_ram_free_bytes{%(s)s} / (comfyui_ram_total_bytes{%(s)s} > 0) < %(freeRatio)s',
    '{{ $labels.target }} has less than %(freeRatioPercent)s RAM free',
    'Only {{ $value | humanizePercentage }} of the RAM of {{ $labels.target }} has been available for '
    + '%(forText)s; models offloaded from VRAM and large images need it, and the OS may kill ComfyUI.',
  ),
  // Stall detection (ComfyUIQueueStalled) relies on the monitor's progress events: without the WebSocket a
  // stuck job goes unnoticed. A down target is ComfyUIDown's job.
  lib.rule(
    config, 'ComfyUIWebSocketLost',
    |||
      (comfywatch_websocket_connected{%(s)s} == 0)
      and on (job, instance, target)
      (comfyui_up{%(s)s} == 1)
    |||,
    "comfywatch's monitoring WebSocket to {{ $labels.target }} is down",
    'comfywatch has had no WebSocket to {{ $labels.target }} for %(forText)s although the target answers '
    + '(comfywatch_websocket_connected = {{ $value }}): progress events, and with them stall detection, are lost.',
  ),
  lib.rule(
    config, 'ComfyUITLSCertExpiringSoon',
    'comfyui_tls_cert_not_after_timestamp_seconds{%(s)s} - time() < %(days)s * 86400',
    'The TLS certificate of {{ $labels.target }} expires soon',
    'The certificate served by {{ $labels.target }} expires in {{ $value | humanizeDuration }}.',
  ),
  lib.rule(
    config, 'ComfyUITLSCertExpiringSoon',
    'comfyui_tls_cert_not_after_timestamp_seconds{%(s)s} - time() < %(days)s * 86400',
    'The TLS certificate of {{ $labels.target }} expires within %(days)s days',
    'The certificate served by {{ $labels.target }} expires in {{ $value | humanizeDuration }}; '
    + 'clients will refuse the connection once it has expired.',
    key='ComfyUITLSCertExpiringSoonCritical',
  ),
  // Stale = the check is scheduled but has not succeeded, while the target itself answers (a down
  // target is ComfyUIDown's job). The canary is ComfyUICanaryNotRunning's: its interval can be hours (Cloud).
  lib.rule(
    config, 'ComfyUICheckStale',
    |||
      (time() - comfywatch_check_last_success_timestamp_seconds{%(s)s, check=~"%(checks)s"} > %(ageSeconds)s)
      and on (job, instance, target)
      (comfyui_up{%(s)s} == 1)
    |||,
    'The {{ $labels.check }} check of {{ $labels.target }} has not succeeded for %(ageText)s',
    'The last successful {{ $labels.check }} check of {{ $labels.target }} was '
    + '{{ $value | humanizeDuration }} ago although the target answers; the values it feeds '
    + '(queue, jobs, billing or authentication) are stale.',
  ),
  // The gauge is the latest validation of the watched workflow (file stem) against the target's node
  // catalogue; `for` only covers a deploy caught half-way.
  lib.rule(
    config, 'ComfyUIWorkflowBroken',
    'comfyui_workflow_valid{%(s)s} == 0',
    'Workflow {{ $labels.workflow }} would be rejected by {{ $labels.target }}',
    'The watched workflow {{ $labels.workflow }} has failed validation against the live node catalogue of '
    + '{{ $labels.target }} for %(forText)s (comfyui_workflow_valid = {{ $value }}): the server would reject it on '
    + 'submit (a node class, input, option or model it uses is gone). `comfywatch doctor {{ $labels.target }} '
    + '--workflow <file>` names each problem and its fix.',
  ),
  // A pool of one server, or one whose servers agree, counts 1 catalogue.
  lib.rule(
    config, 'ComfyUIPoolDrift',
    lib.poolCatalogues(config, '%(s)s') + ' > 1',
    'The servers of pool {{ $labels.pool }} in job {{ $labels.job }} are no longer identical',
    'The servers of pool {{ $labels.pool }} (job {{ $labels.job }}{{ with $labels.%(cluster)s }}, %(cluster)s {{ . }}{{ end }}) '
    + 'have reported {{ $value }} different catalogues (node classes and packs, their inputs and options, model '
    + 'lists) for %(forText)s: a workflow that runs on one of them may be rejected by another. '
    + '`comfywatch diff A B` with one server of each catalogue prints what one has that the other lacks.',
  ),
  // comfy_extras modules (kind="builtin") are left out: nodes_audio.py failing without torchaudio is common
  // and harmless to most servers.
  lib.rule(
    config, 'ComfyUICustomNodeImportFailed',
    'comfyui_custom_node_import_failures{%(s)s, kind="custom"} > 0',
    'Custom node pack {{ $labels.pack }} failed to import on {{ $labels.target }}',
    'The custom node pack {{ $labels.pack }} failed to import when {{ $labels.target }} last started '
    + '(comfyui_custom_node_import_failures = {{ $value }}): its node classes are missing, and workflows that use '
    + 'them are rejected. `comfywatch doctor {{ $labels.target }}` shows the import error (usually a Python module '
    + "missing from ComfyUI's environment).",
  ),
])
