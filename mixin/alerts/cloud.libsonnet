// Alerts about Comfy Cloud accounts: funds, subscription, queue and stuck jobs.
local lib = import 'lib.libsonnet';

function(config) lib.group(config, 'comfy-cloud', [
  // has_funds comes from /api/billing/status; a 402 (or a 429 with a billing error type) is final too,
  // retrying cannot change it, but a few within the window are needed to rule out a one-off glitch.
  lib.rule(
    config, 'ComfyCloudCreditsExhausted',
    |||
      (comfy_cloud_has_funds{%(s)s} == 0)
      or
      (sum without (endpoint, reason) (increase(comfyui_request_failures_total{%(s)s, reason="payment"}[%(window)s])) >= %(refusals)s)
    |||,
    'Comfy Cloud account of {{ $labels.target }} has no funds',
    '{{ if eq $value 0.0 }}/api/billing/status of {{ $labels.target }} reports has_funds = 0{{ else }}'
    + '{{ $value | printf "%%.0f" }} requests to {{ $labels.target }} were refused with 402 Payment Required '
    + '(or a billing 429) in the last %(windowText)s{{ end }}: new jobs are refused until credits are added.',
  ),
  lib.rule(
    config, 'ComfyCloudCreditsLow',
    'comfy_cloud_balance_usd{%(s)s} < %(usd)s',
    'Comfy Cloud balance of {{ $labels.target }} is below %(usd)s USD',
    'The Comfy Cloud balance of {{ $labels.target }} is {{ $value | printf "%%.2f" }} USD (threshold %(usd)s USD).',
  ),
  lib.rule(
    config, 'ComfyCloudCreditsRunningOut',
    |||
      (predict_linear(comfy_cloud_balance_usd{%(s)s}[%(window)s], %(horizonSeconds)s) < 0)
      and
      (comfy_cloud_balance_usd{%(s)s} > 0)
    |||,
    'Comfy Cloud credits of {{ $labels.target }} run out within %(horizonText)s',
    'At the spending rate of the last %(windowText)s the Comfy Cloud balance of {{ $labels.target }} '
    + 'would be {{ $value | printf "%%.2f" }} USD in %(horizonText)s.',
  ),
  lib.rule(
    config, 'ComfyCloudSubscriptionInactive',
    'comfy_cloud_subscription_active{%(s)s} == 0',
    'Comfy Cloud subscription of {{ $labels.target }} is not active',
    '/api/billing/status of {{ $labels.target }} reports is_active = {{ $value }}: API access '
    + 'needs an active Standard, Creator or Pro plan.',
  ),
  lib.rule(
    config, 'ComfyCloudQueueFull',
    'target_endpoint_reason:comfyui_request_failures:ratio_rate5m{%(s)s, reason="queue_full"} > %(ratio)s',
    'The Comfy Cloud queue of {{ $labels.target }} is full',
    '{{ $value | humanizePercentage }} of requests to the {{ $labels.endpoint }} endpoint of '
    + '{{ $labels.target }} were refused with 429 QUEUE_LIMIT over the last 5 minutes.',
  ),
  lib.rule(
    config, 'ComfyCloudJobsStuck',
    'comfy_cloud_jobs_stuck{%(s)s} > 0',
    'Comfy Cloud jobs of {{ $labels.target }} are stuck',
    '{{ $value }} job(s) of {{ $labels.target }} have not reached a final state in far longer '
    + 'than expected (stuck in queued, allocated or preparing).',
  ),
])
