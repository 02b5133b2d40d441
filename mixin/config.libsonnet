// Every knob of the comfywatch mixin. Override any of them with
//   (import 'mixin.libsonnet') + { _config+:: { comfywatchSelector: 'job="comfywatch-prod"' } }
//   (import 'mixin.libsonnet') + { _config+:: { alerts+: { ComfyUIDown+: { 'for': '10m' } } } }
// Dashboard-only knobs live in dashboards/config.libsonnet and merge into the same _config.
{
  _config+:: {
    // Label matchers selecting comfywatch's scrape jobs (/metrics and /probe alike). Applied to every series
    // selector of the rules, alerts and dashboards, and to the `up` series that ComfywatchDown watches.
    comfywatchSelector: 'job=~"comfywatch.*"',

    // The label that tells clusters (or regions, environments) apart. Alerts keep it, inhibitions match on it
    // with job and target, and the dashboards offer it as a variable. Series without it still work.
    clusterLabel: 'cluster',

    // ComfywatchAbsent fires when no `up` series matches this selector. Equality matchers only: absent() copies
    // them into the alert's labels, which is what routes it (a regex would leave the alert with none).
    comfywatchAbsentSelector: 'job="comfywatch"',

    // Where each alert's runbook_url points: %s is the alert name in lower case (the runbook's heading anchor).
    runbookURLPattern: 'https://github.com/comfywatch/comfywatch/blob/main/docs/runbook.md#%s',

    // One entry per alerting rule, keyed by alert name: `for` and severity, plus the rule's thresholds and
    // windows under the names its expression uses. `enabled: false` leaves a rule out of the rendered groups.
    // Durations are Prometheus durations in one unit ('90s', '5m', '6h'); ratios are 0..1.
    alerts: {
      // Per-target alerts are warnings: one dead host is a ticket, a partition is ComfyUIFleetDegraded's page.
      ComfyUIDown: { 'for': '5m', severity: 'warning' },
      // A fleet = the targets sharing job and cluster: `perTargetLabels` are aggregated away (instance too,
      // so /metrics shards and /probe jobs count as one fleet); add any label you relabel per target, or it
      // splits the fleet. Fires when `share` of them are down or failing all their canaries, and only for
      // fleets of at least `minTargets` targets.
      ComfyUIFleetDegraded: {
        'for': '5m', severity: 'critical', share: 0.5, minTargets: 3, perTargetLabels: 'target, instance',
      },
      ComfyUIQueueStalled: { 'for': '5m', severity: 'warning' },
      ComfyUIQueueBacklog: { 'for': '10m', severity: 'warning', oldestPending: '30m' },
      ComfyUIWorkerNotConsuming: { 'for': '5m', severity: 'warning' },
      // `failures` failed runs within `window`, and the latest run failed.
      ComfyUICanaryFailing: { 'for': '5m', severity: 'warning', window: '2h', failures: 2 },
      // No success for `intervals` canary intervals; the interval is measured as the rate of runs and skips
      // over `window`, which must hold a few intervals (6h: hourly canaries and faster).
      ComfyUICanaryNotRunning: { 'for': '10m', severity: 'warning', intervals: 3, window: '6h' },
      // The `quantile` of successful runs' durations over `window` exceeds `seconds`, with at least `minRuns` runs.
      ComfyUICanarySlow: { 'for': '15m', severity: 'warning', seconds: 30, quantile: 0.75, window: '6h', minRuns: 4 },
      ComfyUIAuthFailing: { 'for': '10m', severity: 'critical', ratio: 0.5 },
      // At least `responses` 429s within `window`, or a Retry-After pause in force (Cloud targets).
      ComfyUIRateLimited: { 'for': '15m', severity: 'warning', window: '30m', responses: 2 },
      ComfyUIServerErrors: { 'for': '10m', severity: 'warning', ratio: 0.05 },
      ComfyUIJobFailureRateHigh: { 'for': '15m', severity: 'warning', ratio: 0.25, failures: 3 },
      ComfyUIOutOfMemory: { 'for': '1m', severity: 'warning', window: '1h', failures: 2 },
      ComfyUIVRAMLow: { 'for': '15m', severity: 'warning', freeRatio: 0.05 },
      ComfyUIRAMLow: { 'for': '15m', severity: 'warning', freeRatio: 0.1 },
      ComfyUIWebSocketLost: { 'for': '10m', severity: 'warning' },
      // Two rules share the name ComfyUITLSCertExpiringSoon: a warning and, closer to expiry, a critical one.
      ComfyUITLSCertExpiringSoon: { 'for': '1h', severity: 'warning', days: 14 },
      ComfyUITLSCertExpiringSoonCritical: { 'for': '10m', severity: 'critical', days: 3 },
      ComfyUICheckStale: { 'for': '5m', severity: 'warning', age: '15m', checks: 'system|queue|jobs|billing|auth' },
      // A watched workflow the server would reject: refreshed at start, after a restart or new version, else
      // every 30 minutes, so a broken one stays broken until someone fixes the server or the workflow.
      ComfyUIWorkflowBroken: { 'for': '5m', severity: 'warning' },
      // A pool = the targets sharing a `pool` label within one fleet (ComfyUIFleetDegraded's perTargetLabels are
      // aggregated away). `for` outlasts a rolling deploy, whose members differ until the last one is updated.
      ComfyUIPoolDrift: { 'for': '15m', severity: 'warning' },
      // kind="custom" only: ComfyUI's own optional modules (comfy_extras) often fail harmlessly on a missing
      // extra such as torchaudio.
      ComfyUICustomNodeImportFailed: { 'for': '5m', severity: 'warning' },

      ComfyCloudCreditsExhausted: { 'for': '5m', severity: 'critical', window: '30m', refusals: 2 },
      ComfyCloudCreditsLow: { 'for': '15m', severity: 'warning', usd: 5 },
      ComfyCloudCreditsRunningOut: { 'for': '1h', severity: 'warning', window: '6h', horizon: '24h' },
      ComfyCloudSubscriptionInactive: { 'for': '10m', severity: 'critical' },
      ComfyCloudQueueFull: { 'for': '15m', severity: 'warning', ratio: 0.25 },
      ComfyCloudJobsStuck: { 'for': '15m', severity: 'warning' },

      ComfywatchDown: { 'for': '5m', severity: 'critical' },
      // Set `enabled: false` on a Prometheus that is not meant to scrape comfywatch.
      ComfywatchAbsent: { 'for': '5m', severity: 'critical', enabled: true },
      ComfywatchCheckOverruns: { 'for': '30m', severity: 'warning', window: '10m' },
      ComfywatchConfigReloadFailed: { 'for': '10m', severity: 'warning' },
    },
  },
}
