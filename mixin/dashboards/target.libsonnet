// ComfyUI / Target detail: one target in depth. The fleet dashboard's per-target series link here.
{
  grafanaDashboards+:: {
    'comfywatch-target.json':
      local lib = (import 'lib.libsonnet')($._config);
      local q = lib.query;
      local canary = '%(t)s, canary=~"$canary"';
      local alertsLib = import '../alerts/lib.libsonnet';
      local latencyScope = 'By default only the main poll request has a latency histogram (system_stats for ComfyUI, '
                           + 'user for Comfy Cloud); with [metrics] detail = "full" every endpoint has one.';
      lib.dashboard(
        'comfywatch-target',
        'ComfyUI / Target detail',
        'One comfywatch target in depth: canary phases, request latency, failures by reason, HTTP phases, TLS.',
        [
          lib.variables.datasource,
          lib.variables.cluster,
          lib.variables.job,
          lib.variables.query('target', 'Target', 'The comfywatch target to inspect', 'comfyui_up{%(s)s}', multi=false),
          lib.variables.query('canary', 'Canary', 'Canary workflows of the target', 'comfyui_canary_success{%(t)s}'),
        ],
        [
          lib.healthRow($.comfywatchAlertNames),
          lib.row('Status', [
            lib.stat('Reachable', 'Latest poll result (comfyui_up).',
                     [q('comfyui_up{%(t)s}', '{{target}}', instant=true)], mappings=lib.upDown, colorMode='background'),
            lib.stat('ComfyUI version', 'Version reported by /system_stats (comfyui_info).',
                     [q('comfyui_info{%(t)s}', '{{version}}', instant=true)], textMode='name'),
            lib.stat('Queue', 'Jobs running and pending right now.',
                     [q('comfyui_queue_running{%(t)s}', 'running', instant=true),
                      q('comfyui_queue_pending{%(t)s}', 'pending', instant=true)],
                     unit='short', textMode='value_and_name'),
            lib.stat('Canary', "Result of each canary's latest run (comfyui_canary_success).",
                     [q('comfyui_canary_success{' + canary + '}', '{{canary}}', instant=true)],
                     mappings=lib.yesNo(), colorMode='background', textMode='value_and_name'),
            lib.stat('Last canary success', 'Time since each canary last succeeded.',
                     [q('time() - comfyui_canary_last_success_timestamp_seconds{' + canary + '}', '{{canary}}', instant=true)],
                     unit='s', textMode='value_and_name'),
            lib.stat('TLS certificate expires in',
                     "Time left until the served certificate's notAfter. ComfyUITLSCertExpiringSoon warns at 14 days and pages at 3.",
                     [q('comfyui_tls_cert_not_after_timestamp_seconds{%(t)s} - time()', '{{target}}', instant=true)],
                     unit='s', thresholds=[['red', null], ['orange', 259200], ['green', 1209600]], noValue='no TLS'),
          ]),
          lib.row('Workflows', [
            lib.stat('Watched workflows',
                     "Each watched workflow's latest validation against the target's live node catalogue "
                     + '(comfyui_workflow_valid: Invalid = the server would reject it on submit), and its problems by '
                     + "ComfyUI's error type (comfyui_workflow_problems: value_not_in_list, invalid_prompt for a missing "
                     + 'node class, return_type_mismatch, required_input_missing...; ui_format, invalid_json or unreadable '
                     + 'when the file is not an API-format workflow). Validated at start, after a restart, reconnect or new '
                     + 'version, else every 30 minutes. ComfyUIWorkflowBroken fires after 5 minutes of Invalid.',
                     [q('comfyui_workflow_valid{%(t)s}', '{{workflow}}', instant=true),
                      q('comfyui_workflow_problems{%(t)s}', '{{workflow}} {{type}}', instant=true)],
                     mappings=lib.valueText({ '0': ['Invalid', 'red'], '1': ['Valid', 'green'] }),
                     colorMode='background', textMode='value_and_name', noValue='no watched workflow', w=24)
            + lib.thresholdsOf('B', [['green', null], ['red', 1]]),
          ]),
          lib.row('Queue', [
            lib.stateTimeline(
              'Queue stalled or not consuming',
              'Yes = the running job made no progress for longer than stall_after (comfyui_queue_stalled), or jobs are '
              + 'pending and nothing has run for several polls (comfyui_queue_worker_not_consuming). These drive '
              + 'ComfyUIQueueStalled and ComfyUIWorkerNotConsuming.',
              [q('comfyui_queue_stalled{%(t)s}', 'stalled'), q('comfyui_queue_worker_not_consuming{%(t)s}', 'not consuming')],
              lib.yesNo(bad='1'), w=8, h=8,
            ),
            lib.timeseries('Oldest pending job',
                           'How long the oldest queued job has been waiting (comfyui_queue_oldest_pending_seconds). '
                           + 'ComfyUIQueueBacklog fires above 30 minutes.',
                           [q('comfyui_queue_oldest_pending_seconds{%(t)s}', 'oldest pending'),
                            q('comfyui_queue_running_seconds{%(t)s}', 'running job age')],
                           unit='s', thresholds=[['green', null], ['red', 1800]]),
            lib.timeseries('Time since last successful check',
                           "Age of each check's last success (system, queue, jobs, canary, billing): it grows while a "
                           + 'check fails or stops running, and the other panels then show old news. On a quiet server '
                           + 'with the monitoring WebSocket, queue and jobs run every fifth read, up to 5 minutes apart. '
                           + "ComfyUICheckStale fires when a check's last success is older than 15 minutes while the "
                           + 'target is up.',
                           [q('time() - comfywatch_check_last_success_timestamp_seconds{%(t)s}', '{{check}}')],
                           unit='s'),
          ]),
          lib.row('Canary', [
            lib.timeseries('Canary phases (last run)',
                           'Where the latest canary run spent its time: submit (POST /prompt), queue (waiting to start), '
                           + 'execute (server-side), fetch (reading the output).',
                           [q('comfyui_canary_phase_seconds{' + canary + ', phase!="total"}', '{{canary}} {{phase}}')],
                           unit='s', stacked=true, bars=true, w=12),
            lib.timeseries('Canary duration',
                           'Median and 90th percentile of end-to-end canary time (comfyui_canary_duration_seconds '
                           + 'histogram) over the %s before each point, long enough for an hourly canary to have '
                           % $._config.canaryDurationWindow + 'several runs; and the latest run. ComfyUICanarySlow fires above 30 s.',
                           [q('histogram_quantile(0.5, sum by (canary, le) (increase(comfyui_canary_duration_seconds_bucket{' + canary + '}[%(canaryWindow)s])))', '{{canary}} p50'),
                            q('histogram_quantile(0.9, sum by (canary, le) (increase(comfyui_canary_duration_seconds_bucket{' + canary + '}[%(canaryWindow)s])))', '{{canary}} p90'),
                            q('comfyui_canary_phase_seconds{' + canary + ', phase="total"}', '{{canary}} last run')],
                           unit='s', thresholds=[['green', null], ['red', 30]], w=12),
            lib.timeseries('Canary server execution time',
                           "Execution time measured by the server's own timestamps (execution_start to execution_success).",
                           [q('comfyui_canary_server_execution_seconds{' + canary + '}', '{{canary}}')], unit='s'),
            lib.timeseries('Canary failures by reason',
                           'Canary runs, failed runs, failed runs by reason and skipped runs (server busy, request budget, '
                           + 'Retry-After) in the %s before each point: one failure reads as 1, not as a rate. '
                           % $._config.rareEventWindow
                           + '"failed runs" is runs minus successes, as ComfyUICanaryFailing counts them. A reason\'s series '
                           + 'appears with its first failure since comfywatch started (with [metrics] detail = "full" every '
                           + 'reason is at 0 from the start), an increment increase() cannot see: that failure counts in '
                           + '"failed runs" but not by reason.',
                           [q('sum by (canary) ' + alertsLib.canaryFailedRuns(canary, '%(window)s'), '{{canary}} failed runs'),
                            q('sum by (canary, reason) (increase(comfyui_canary_failures_total{' + canary + '}[%(window)s]))', '{{canary}} {{reason}}'),
                            q('sum by (canary) (increase(comfyui_canary_skipped_total{' + canary + '}[%(window)s]))', '{{canary}} skipped'),
                            q('sum by (canary) (increase(comfyui_canary_runs_total{' + canary + '}[%(window)s]))', '{{canary}} runs')],
                           bars=true),
            lib.stateTimeline(
              'Canary WebSocket',
              'Whether the latest canary run followed progress over the WebSocket (No = it had to fall back to polling '
              + "/history), and whether the daemon's WebSocket to the target is connected (stall detection relies on its progress events).",
              [q('comfyui_canary_websocket_ok{' + canary + '}', '{{canary}}'),
               q('comfywatch_websocket_connected{%(t)s}', 'daemon WebSocket')],
              lib.yesNo(), w=8, h=8,
            ),
          ]),
          lib.row('Requests', [
            lib.heatmap('Request latency',
                        'Distribution of request durations to the target (comfyui_request_duration_seconds buckets). '
                        + latencyScope,
                        [q('sum by (le) (rate(comfyui_request_duration_seconds_bucket{%(t)s}[$__rate_interval]))', '{{le}}')], 's'),
            lib.timeseries('Request latency p90 by endpoint', '90th percentile request duration per endpoint. ' + latencyScope,
                           [q('histogram_quantile(0.9, sum by (endpoint, le) (rate(comfyui_request_duration_seconds_bucket{%(t)s}[$__rate_interval])))', '{{endpoint}}')],
                           unit='s', w=12),
            lib.timeseries('Requests by endpoint and status', 'Requests per second by endpoint and HTTP status code.',
                           [q('sum by (endpoint, code) (rate(comfyui_requests_total{%(t)s}[$__rate_interval]))', '{{endpoint}} {{code}}')],
                           unit='reqps'),
            lib.timeseries('Request failures by reason',
                           'Failed requests per second by failure reason (the one taxonomy: dns, connect, tls, timeout, auth, '
                           + 'forbidden, payment, rate_limited, server_error...).',
                           [q('sum by (reason) (rate(comfyui_request_failures_total{%(t)s}[$__rate_interval]))', '{{reason}}')],
                           unit='reqps', stacked=true),
            lib.timeseries('Failure ratio by reason (5 min)',
                           'Share of all requests that failed, per reason (recording rule '
                           + 'target_reason:comfyui_request_failures:ratio_rate5m). ComfyUIServerErrors fires above 5% server_error.',
                           [q('target_reason:comfyui_request_failures:ratio_rate5m{%(t)s}', '{{reason}}')], unit='percentunit')
            + { fieldConfig+: { defaults+: { max: 1 } } },
            lib.timeseries('HTTP phases (last status poll)',
                           'Time spent in DNS, TCP connect, TLS handshake, server processing and transfer during the latest status poll.',
                           [q('comfyui_http_phase_seconds{%(t)s}', '{{phase}}')], unit='s', stacked=true, w=24),
          ]),
          lib.row('Jobs and resources', [
            lib.timeseries('Job failures by reason',
                           'Failed jobs by reason, and all finished jobs, in the %s before each point.' % $._config.rareEventWindow,
                           [q('sum by (reason) (increase(comfyui_job_failures_total{%(t)s}[%(window)s]))', '{{reason}}'),
                            q('sum(increase(comfyui_jobs_total{%(t)s}[%(window)s]))', 'all finished jobs')], w=12),
            lib.timeseries('VRAM', 'Total, free and torch-reserved memory of each device (on CPU, ComfyUI reports RAM here).',
                           [q('comfyui_device_vram_total_bytes{%(t)s}', '{{device}} total'),
                            q('comfyui_device_vram_free_bytes{%(t)s}', '{{device}} free'),
                            q('comfyui_device_torch_vram_total_bytes{%(t)s}', '{{device}} torch reserved'),
                            q('comfyui_device_torch_vram_free_bytes{%(t)s}', '{{device}} torch reserved free')],
                           unit='bytes', w=12),
          ]),
        ],
      ),
  },
}
