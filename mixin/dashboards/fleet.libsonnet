// ComfyUI / Fleet overview: every target at a glance; graphs show the k worst targets, and each series links
// to the target's detail dashboard.
{
  grafanaDashboards+:: {
    'comfywatch-fleet.json':
      local lib = (import 'lib.libsonnet')($._config);
      local q = lib.query;
      local k = $._config.fleetTopK;
      local worst = ' Only the %d highest targets are drawn at each point in time; a line per target links to its detail dashboard.' % k;
      local least = ' Only the %d lowest targets are drawn at each point in time; a line per target links to its detail dashboard.' % k;
      lib.dashboard(
        'comfywatch-fleet',
        'ComfyUI / Fleet overview',
        'Every ComfyUI and Comfy Cloud target watched by comfywatch: reachability, queues, jobs, GPU memory.',
        [
          lib.variables.datasource,
          lib.variables.cluster,
          lib.variables.job,
          lib.variables.query('target', 'Target', 'comfywatch targets (the `target` label)', 'comfyui_up{%(s)s}'),
        ],
        [
          lib.healthRow($.comfywatchAlertNames),
          lib.row('Health', [
            lib.stat('Targets up', 'Targets whose latest poll succeeded (comfyui_up = 1), out of all selected targets.',
                     [q('sum(comfyui_up{%(t)s})', 'up', instant=true), q('count(comfyui_up{%(t)s})', 'total', instant=true)],
                     textMode='value_and_name', w=5),
            lib.stat('Targets down', 'Targets whose latest poll failed. ComfyUIDown fires after 5 minutes of this.',
                     [q(lib.countOrZero('count(comfyui_up{%(t)s} == 0)'), 'down', instant=true)],
                     thresholds=[['green', null], ['red', 1]], colorMode='background', w=5),
            lib.stat('Stalled queues', 'Targets whose running job has made no progress for longer than stall_after (comfyui_queue_stalled).',
                     [q(lib.countOrZero('sum(comfyui_queue_stalled{%(t)s})'), 'stalled', instant=true)],
                     thresholds=[['green', null], ['red', 1]], colorMode='background', w=5),
            lib.stat('Workers not consuming', 'Targets with pending jobs and nothing running for several polls (comfyui_queue_worker_not_consuming).',
                     [q(lib.countOrZero('sum(comfyui_queue_worker_not_consuming{%(t)s})'), 'not consuming', instant=true)],
                     thresholds=[['green', null], ['red', 1]], colorMode='background', w=5),
            lib.stat('Canaries failing', 'Canary workflows whose latest run failed (comfyui_canary_success = 0).',
                     [q(lib.countOrZero('count(comfyui_canary_success{%(t)s} == 0)'), 'failing', instant=true)],
                     thresholds=[['green', null], ['red', 1]], colorMode='background', w=4),
            lib.stateTimeline(
              'Reachability',
              'comfyui_up per target over time: the raw result of every poll, before the alert\'s 5 minute debounce.'
              + ' Only the %d least reachable targets are drawn at each point in time (down ones first).' % k,
              [q('bottomk(%(k)s, max by (%(by)s) (comfyui_up{%(t)s}))', '{{target}}')],
              lib.upDown, links=lib.targetLinks,
            ),
          ]),
          lib.row('Queue', [
            lib.timeseries('Queue depth', 'Jobs waiting (pending) and executing (running) per target.' + worst,
                           [q('topk(%(k)s, sum by (%(by)s) (comfyui_queue_pending{%(t)s}))', '{{target}} pending'),
                            q('topk(%(k)s, sum by (%(by)s) (comfyui_queue_running{%(t)s}))', '{{target}} running')],
                           links=lib.targetLinks),
            lib.timeseries('Oldest pending job',
                           'How long the oldest queued job has been waiting. ComfyUIQueueBacklog fires above 30 minutes.' + worst,
                           [q('topk(%(k)s, max by (%(by)s) (comfyui_queue_oldest_pending_seconds{%(t)s}))', '{{target}}')],
                           unit='s', thresholds=[['green', null], ['red', 1800]], links=lib.targetLinks),
            lib.timeseries('Running job age', 'How long the currently running job has been executing.' + worst,
                           [q('topk(%(k)s, max by (%(by)s) (comfyui_queue_running_seconds{%(t)s}))', '{{target}}')],
                           unit='s', links=lib.targetLinks),
            lib.stateTimeline(
              'Stalled or not consuming',
              '1 = the running job stalled (no progress) or the worker ignores a non-empty queue. These drive '
              + 'ComfyUIQueueStalled and ComfyUIWorkerNotConsuming. Only the %d worst targets are drawn at each point in time.' % k,
              [q('topk(%(k)s, max by (%(by)s) (comfyui_queue_stalled{%(t)s}))', '{{target}} stalled'),
               q('topk(%(k)s, max by (%(by)s) (comfyui_queue_worker_not_consuming{%(t)s}))', '{{target}} not consuming')],
              lib.yesNo(bad='1'), links=lib.targetLinks,
            ),
          ]),
          lib.row('Jobs and requests', [
            lib.timeseries('Job throughput',
                           'Jobs finished in the %s before each point (all users\' jobs, from history or /api/jobs).' % $._config.rareEventWindow + worst,
                           [q('topk(%(k)s, sum by (%(by)s) (increase(comfyui_jobs_total{%(t)s}[%(window)s])))', '{{target}}')],
                           links=lib.targetLinks),
            lib.timeseries('Job failure ratio (30 min)',
                           'Share of finished jobs that failed over the last 30 minutes, cancelled jobs not counted '
                           + '(recording rule target:comfyui_job_failures:ratio_rate30m). ComfyUIJobFailureRateHigh fires above 25%.' + worst,
                           [q('topk(%(k)s, target:comfyui_job_failures:ratio_rate30m{%(t)s})', '{{target}}')],
                           unit='percentunit', thresholds=[['green', null], ['red', 0.25]], links=lib.targetLinks)
            + { fieldConfig+: { defaults+: { max: 1 } } },
            lib.timeseries('Job failures by reason',
                           'Failed jobs in the %s before each point, by failure reason (execution_error, oom, interrupted, lost...).' % $._config.rareEventWindow + worst,
                           [q('topk(%(k)s, sum by (%(by)s, reason) (increase(comfyui_job_failures_total{%(t)s}[%(window)s])))', '{{target}} {{reason}}')],
                           stacked=true, links=lib.targetLinks),
            lib.timeseries('Job duration',
                           'Median and 90th percentile of job execution time over the %s before each point (jobs can be rare: a shorter window is often empty).' % $._config.rareEventWindow + worst,
                           [q('topk(%(k)s, histogram_quantile(0.5, sum by (%(by)s, le) (increase(comfyui_job_duration_seconds_bucket{%(t)s}[%(window)s]))))', '{{target}} p50'),
                            q('topk(%(k)s, histogram_quantile(0.9, sum by (%(by)s, le) (increase(comfyui_job_duration_seconds_bucket{%(t)s}[%(window)s]))))', '{{target}} p90')],
                           unit='s', links=lib.targetLinks, w=12),
            lib.timeseries('Request failure ratio (5 min)',
                           "Share of comfywatch's requests to each target that failed, any reason (recording rule "
                           + 'target:comfyui_request_failures:ratio_rate5m). Target detail breaks it down by reason.' + worst,
                           [q('topk(%(k)s, target:comfyui_request_failures:ratio_rate5m{%(t)s})', '{{target}}')],
                           unit='percentunit', thresholds=[['green', null], ['red', 0.05]], links=lib.targetLinks, w=12)
            + { fieldConfig+: { defaults+: { max: 1 } } },
          ]),
          lib.row('GPU and memory', [
            lib.bargauge('VRAM headroom',
                         "Free share of each GPU's memory (CPU and DirectML devices are left out: their numbers are RAM or "
                         + 'meaningless). ComfyUIVRAMLow fires below 5%% for 15 minutes. The %d devices with the least headroom.' % k,
                         [q('bottomk(%(k)s, target_device:comfyui_device_vram_free:ratio{%(t)s})', '{{target}} {{device}}', instant=true)],
                         'percentunit', [['red', null], ['orange', 0.05], ['green', 0.2]], links=lib.targetLinks),
            lib.timeseries('VRAM free', "Free accelerator memory per device (driver free plus torch's reclaimable cache)." + least,
                           [q('bottomk(%(k)s, comfyui_device_vram_free_bytes{%(t)s, type!~"cpu|directml"})', '{{target}} {{device}}')],
                           unit='bytes', links=lib.targetLinks, w=12),
            lib.timeseries('RAM free', 'Available system memory of the ComfyUI host (psutil available), and the total of the same hosts.' + least,
                           [q('bottomk(%(k)s, comfyui_ram_free_bytes{%(t)s})', '{{target}} free'),
                            q('comfyui_ram_total_bytes{%(t)s} and on (%(by)s) bottomk(%(k)s, comfyui_ram_free_bytes{%(t)s})', '{{target}} total')],
                           unit='bytes', links=lib.targetLinks, w=24),
          ]),
          local drifting = (import '../alerts/lib.libsonnet').poolCatalogues($._config, '%(t)s') + ' > 1';
          lib.row('Node catalogues', [
            lib.stat('Drifting pools',
                     'Pools (targets sharing a `pool` label) whose servers report more than one catalogue: different node '
                     + 'classes, packs, inputs, options or model lists (comfyui_catalog_info). ComfyUIPoolDrift fires '
                     + 'after 15 minutes, long enough for a rolling deploy to finish.',
                     [q(lib.countOrZero('count(' + drifting + ')'), 'drifting pools', instant=true)],
                     thresholds=[['green', null], ['orange', 1]], colorMode='background', w=4),
            lib.stat('Pool drift',
                     'Every server of the drifting pools with its catalogue fingerprints (nodes_hash: node classes, '
                     + 'packs, inputs and options; models_hash: model lists): the odd one out has a pair of its own. '
                     + '`comfywatch diff A B` prints what one server has that the other lacks. Empty while every pool agrees.',
                     [q('comfyui_catalog_info{%(t)s, pool!=""} and on (' + $._config.clusterLabel + ', job, pool) ('
                        + drifting + ')', '{{pool}} {{target}}: nodes {{nodes_hash}}, models {{models_hash}}', instant=true)],
                     textMode='name', w=10),
            lib.stat('Custom node import failures',
                     "Node packs that failed to import at the server's last start, read from ComfyUI's log "
                     + '(comfyui_custom_node_import_failures): custom = a custom_nodes pack, whose nodes are missing '
                     + '(ComfyUICustomNodeImportFailed fires after 5 minutes); builtin = one of ComfyUI\'s own optional '
                     + 'comfy_extras modules, often harmless (nodes_audio.py without torchaudio). Empty when none failed.',
                     [q('comfyui_custom_node_import_failures{%(t)s, kind="custom"}', '{{target}}: {{pack}}', instant=true),
                      q('comfyui_custom_node_import_failures{%(t)s, kind="builtin"}', '{{target}}: {{pack}} (builtin)', instant=true)],
                     thresholds=[['red', null]], colorMode='background', textMode='name', w=10)
            + lib.thresholdsOf('B', [['orange', null]]),
          ]),
          lib.row('comfywatch checks', [
            lib.timeseries('Check duration', 'How long the latest run of each check took.' + worst,
                           [q('topk(%(k)s, max by (%(by)s, check) (comfywatch_check_duration_seconds{%(t)s}))', '{{target}} {{check}}')],
                           unit='s', links=lib.targetLinks),
            lib.timeseries('Check overruns',
                           'Check runs skipped because the previous run was still going, in the %s before each point. ComfywatchCheckOverruns fires when this persists for 30 minutes.' % $._config.rareEventWindow + worst,
                           [q('topk(%(k)s, sum by (%(by)s, check) (increase(comfywatch_check_overruns_total{%(t)s}[%(window)s])))', '{{target}} {{check}}')],
                           links=lib.targetLinks),
            lib.timeseries('Time since last successful check',
                           "Age of each check's last success. ComfyUICheckStale fires when a check's last success is older than 15 minutes while the target is up." + worst,
                           [q('topk(%(k)s, time() - max by (%(by)s, check) (comfywatch_check_last_success_timestamp_seconds{%(t)s}))', '{{target}} {{check}}')],
                           unit='s', links=lib.targetLinks),
          ]),
        ],
      ),
  },
}
