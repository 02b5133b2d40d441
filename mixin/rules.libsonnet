// Recording rules: the ratios that both the dashboards and the alerts read.
// Naming: level:metric:operations (https://prometheus.io/docs/practices/rules/). Aggregations use
// `without (...)`, so job, instance, target and any relabelled label (the cluster label...) survive.
{
  prometheusRules+:: {
    local p = { s: $._config.comfywatchSelector },
    groups+: [{
      name: 'comfywatch-recording',
      rules: [
        {
          // Share of one endpoint's requests that failed with one reason (auth, rate_limited, queue_full...).
          record: 'target_endpoint_reason:comfyui_request_failures:ratio_rate5m',
          expr: |||
            rate(comfyui_request_failures_total{%(s)s}[5m])
            / ignoring (reason) group_left ()
            sum without (code) (rate(comfyui_requests_total{%(s)s}[5m]))
          ||| % p,
        },
        {
          // Share of all of a target's requests that failed with one reason (server_error...).
          record: 'target_reason:comfyui_request_failures:ratio_rate5m',
          expr: |||
            sum without (endpoint) (rate(comfyui_request_failures_total{%(s)s}[5m]))
            / ignoring (reason) group_left ()
            sum without (endpoint, code) (rate(comfyui_requests_total{%(s)s}[5m]))
          ||| % p,
        },
        {
          // Share of all of a target's requests that failed, whatever the reason.
          record: 'target:comfyui_request_failures:ratio_rate5m',
          expr: |||
            sum without (endpoint, reason) (rate(comfyui_request_failures_total{%(s)s}[5m]))
            / sum without (endpoint, code) (rate(comfyui_requests_total{%(s)s}[5m]))
          ||| % p,
        },
        {
          // Jobs are sparse, so job ratios use 30 minutes. `interrupted` is a user pressing Cancel, not a
          // failure of the server, and is left out.
          record: 'target:comfyui_job_failures:increase30m',
          expr: 'sum without (reason) (increase(comfyui_job_failures_total{%(s)s, reason!="interrupted"}[30m]))' % p,
        },
        {
          // Cancelled jobs leave the denominator too: the ratio is failures among the jobs that were let finish.
          // `or 0 * ...` stands in for a target that has never had a job cancelled.
          record: 'target:comfyui_job_failures:ratio_rate30m',
          expr: |||
            sum without (reason) (rate(comfyui_job_failures_total{%(s)s, reason!="interrupted"}[30m]))
            / (
              sum without () (rate(comfyui_jobs_total{%(s)s}[30m]))
              - (
                sum without (reason) (rate(comfyui_job_failures_total{%(s)s, reason="interrupted"}[30m]))
                or 0 * sum without () (rate(comfyui_jobs_total{%(s)s}[30m]))
              )
            )
          ||| % p,
        },
        {
          // Free share of each accelerator's memory. On CPU (and DirectML) ComfyUI reports RAM or nothing
          // useful as "VRAM", so those devices are left out.
          record: 'target_device:comfyui_device_vram_free:ratio',
          expr: |||
            comfyui_device_vram_free_bytes{%(s)s, type!~"cpu|directml"}
            / (comfyui_device_vram_total_bytes{%(s)s, type!~"cpu|directml"} > 0)
          ||| % p,
        },
        {
          // Slope of the Comfy Cloud balance over the last 6 h in USD per second: negative while spending,
          // positive after a top-up. Spend per hour is -3600 times it.
          record: 'target:comfy_cloud_balance_usd:deriv6h',
          expr: 'deriv(comfy_cloud_balance_usd{%(s)s}[6h])' % p,
        },
      ],
    }],
  },
}
