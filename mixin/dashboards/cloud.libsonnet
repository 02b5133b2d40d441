// ComfyUI / Comfy Cloud: credits, spend, subscription and the refusals particular to Comfy Cloud.
{
  grafanaDashboards+:: {
    'comfywatch-cloud.json':
      local lib = (import 'lib.libsonnet')($._config);
      local q = lib.query;
      // The recording rule is the balance's slope in USD per second, negative while spending.
      local spendPerHour = '-3600 * target:comfy_cloud_balance_usd:deriv6h{%(t)s}';
      lib.dashboard(
        'comfywatch-cloud',
        'ComfyUI / Comfy Cloud',
        'Comfy Cloud targets: credits, burn rate, subscription, payment and rate-limit refusals, concurrency.',
        [
          lib.variables.datasource,
          lib.variables.cluster,
          lib.variables.job,
          lib.variables.query('target', 'Target', 'Comfy Cloud targets', 'comfyui_target_info{%(s)s, kind="cloud"}'),
        ],
        [
          lib.healthRow($.comfywatchAlertNames),
          lib.row('Credits', [
            lib.stat('Balance',
                     'Credit balance from /api/billing/balance (absent when Cloud does not report one). ComfyCloudCreditsLow fires below 5 USD.',
                     [q('comfy_cloud_balance_usd{%(t)s}', '{{target}}', instant=true)],
                     unit='currencyUSD', thresholds=[['red', null], ['orange', 5], ['green', 20]])
            + { fieldConfig+: { defaults+: { decimals: 2 } } },
            lib.stat('Effective balance', 'Balance minus pending charges; may be negative (partner nodes bill after running).',
                     [q('comfy_cloud_effective_balance_usd{%(t)s}', '{{target}}', instant=true)],
                     unit='currencyUSD', thresholds=[['red', null], ['green', 0]])
            + { fieldConfig+: { defaults+: { decimals: 2 } } },
            lib.stat('Days of credit left',
                     'Balance divided by the spend rate of the last 6 hours (recording rule target:comfy_cloud_balance_usd:deriv6h). '
                     + 'Empty while the balance is not falling. ComfyCloudCreditsRunningOut fires when it is under one day.',
                     [q('comfy_cloud_balance_usd{%(t)s} / (24 * ' + spendPerHour + ' > 0)', '{{target}}', instant=true)],
                     unit='d', thresholds=[['red', null], ['orange', 1], ['green', 7]], noValue='not spending')
            + { fieldConfig+: { defaults+: { decimals: 1 } } },
            lib.stat('Has funds', 'has_funds from /api/billing/status. No = jobs are refused (ComfyCloudCreditsExhausted).',
                     [q('comfy_cloud_has_funds{%(t)s}', '{{target}}', instant=true)], mappings=lib.yesNo(), colorMode='background'),
            lib.stat('Subscription', 'Plan tier and status from /api/billing/status (comfy_cloud_subscription_info).',
                     [q('comfy_cloud_subscription_info{%(t)s}', '{{tier}} ({{status}})', instant=true)], textMode='name'),
            lib.stat('Subscription active', 'is_active from /api/billing/status. No = API access is refused (ComfyCloudSubscriptionInactive).',
                     [q('comfy_cloud_subscription_active{%(t)s}', '{{target}}', instant=true)], mappings=lib.yesNo(), colorMode='background'),
            lib.timeseries('Balance', 'Balance and effective balance over time.',
                           [q('comfy_cloud_balance_usd{%(t)s}', '{{target}} balance'),
                            q('comfy_cloud_effective_balance_usd{%(t)s}', '{{target}} effective')],
                           unit='currencyUSD', thresholds=[['red', null], ['green', 5]], min=null, w=12),
            lib.timeseries('Burn rate (USD per hour)',
                           "Spend per hour from the balance's slope over 6 hours (recording rule "
                           + 'target:comfy_cloud_balance_usd:deriv6h, USD per second, times -3600); negative after a top-up.',
                           [q(spendPerHour, '{{target}}')], unit='currencyUSD', min=null, w=12),
          ]),
          lib.row('Capacity and refusals', [
            lib.timeseries('Concurrency used vs plan',
                           "Jobs running now against the plan's concurrent-job limit (Standard 1, Creator 3, Pro 5; live value "
                           + 'from /api/features when present).',
                           [q('comfyui_queue_running{%(t)s}', '{{target}} running'),
                            q('comfy_cloud_max_concurrent_jobs{%(t)s}', '{{target}} plan limit'),
                            q('comfyui_queue_pending{%(t)s}', '{{target}} pending')], w=12),
            lib.timeseries('402 and 429 refusals',
                           'Requests refused for payment (402 or billing 429), rate limiting (429) or a full queue '
                           + '(429 QUEUE_LIMIT) in the %s before each point: after a 429 comfywatch waits out Retry-After, '
                           % $._config.rareEventWindow + 'so refusals are minutes apart.',
                           [q('sum by (target, reason) (increase(comfyui_request_failures_total{%(t)s, reason=~"payment|rate_limited|queue_full"}[%(window)s]))',
                              '{{target}} {{reason}}')], w=12),
            lib.timeseries('Retry-After', 'Seconds left in the Retry-After pause after a 429 (0 = none): comfywatch sends nothing to the account meanwhile.',
                           [q('comfy_cloud_retry_after_seconds{%(t)s}', '{{target}}')], unit='s'),
            lib.timeseries('Stuck jobs', 'Jobs that have not reached a final state in far longer than expected (ComfyCloudJobsStuck).',
                           [q('comfy_cloud_jobs_stuck{%(t)s}', '{{target}}')], thresholds=[['green', null], ['red', 1]]),
            lib.stat('Canary runs today', 'Cloud canary runs today; each costs credits and is capped by max_runs_per_day.',
                     [q('comfy_cloud_canary_runs_today{%(t)s}', '{{target}}', instant=true)], unit='short', w=8, h=8),
            lib.timeseries('Job failures by reason',
                           'Failed Cloud jobs by reason (execution_error, lost, payment...) in the %s before each point.'
                           % $._config.rareEventWindow,
                           [q('sum by (target, reason) (increase(comfyui_job_failures_total{%(t)s}[%(window)s]))', '{{target}} {{reason}}')],
                           w=24),
          ]),
        ],
      ),
  },
}
