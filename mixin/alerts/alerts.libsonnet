// The alerting rules, one group per file: ComfyUI targets, Comfy Cloud accounts, and comfywatch itself.
// Every `for`, severity, threshold and window comes from _config.alerts (config.libsonnet).
{
  prometheusAlerts+:: {
    groups+: [
      (import 'comfyui.libsonnet')($._config),
      (import 'cloud.libsonnet')($._config),
      (import 'comfywatch.libsonnet')($._config),
    ],
  },
}
