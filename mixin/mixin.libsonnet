// The comfywatch monitoring mixin: alerts, recording rules, Alertmanager inhibitions and Grafana dashboards
// for comfywatch's metrics, tuned through _config (config.libsonnet lists every knob).
//
//   local comfywatch = (import 'comfywatch/mixin/mixin.libsonnet') + { _config+:: { clusterLabel: 'region' } };
//   comfywatch.prometheusAlerts   // Prometheus rule file object: { groups: [...] }
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'alerts/inhibitions.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
