// The Grafana dashboards, one file each; lib.libsonnet builds their panels and config.libsonnet holds their knobs.
(import 'config.libsonnet')
+ (import 'fleet.libsonnet')
+ (import 'target.libsonnet')
+ (import 'cloud.libsonnet')
+ {
  // "Firing alerts" counts exactly the alerts this mixin defines, whatever other rule files are loaded.
  comfywatchAlertNames:: std.set([
    rule.alert
    for group in $.prometheusAlerts.groups
    for rule in group.rules
    if std.objectHas(rule, 'alert')
  ]),
}
