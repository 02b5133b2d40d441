// Builds alerting rules from their _config.alerts entries, so `for`, severity, thresholds and windows are
// spelled once, in config.libsonnet, and the annotations quote what the expression really uses.
local units = { s: ['second', 1], m: ['minute', 60], h: ['hour', 3600], d: ['day', 86400] };
local parse(duration) =
  local unit = duration[std.length(duration) - 1];
  assert std.objectHas(units, unit) : 'durations take one unit of s, m, h or d: ' + duration;
  { count: std.parseInt(duration[:std.length(duration) - 1]), unit: units[unit] };
// %s of a number prints 17 significant digits (0.05 -> 0.050000000000000003); rules and annotations show
// the number as it was written in _config.
local number(value) = if value == std.floor(value) then '%d' % value else '%g' % value;

{
  seconds(duration):: local d = parse(duration); d.count * d.unit[1],

  // '5m' -> '5 minutes', '1h' -> '1 hour': descriptions read like the hand-written ones.
  humanDuration(duration)::
    local d = parse(duration);
    '%d %s%s' % [d.count, d.unit[0], if d.count == 1 then '' else 's'],

  percent(ratio):: '%g%%' % (ratio * 100),

  // The values an expression or annotation template may name: the alert's own entry, plus
  //   s        the comfywatch selector (every series selector starts with it)
  //   cluster  the cluster label
  //   absent   the selector ComfywatchAbsent watches
  //   forText  the alert's `for` in words
  //   <field>                 each number field as written (0.05, not 0.050000000000000003)
  //   <field>Percent          each ratio field (< 1) as a percentage
  //   <field>Text, <field>Seconds  each duration field in words and in seconds
  params(config, key)::
    local entry = config.alerts[key];
    local ratios = [k for k in std.objectFields(entry) if std.isNumber(entry[k]) && entry[k] < 1];
    local isDuration(value) =
      std.isString(value) && std.length(value) > 1 && std.objectHas(units, value[std.length(value) - 1])
      && std.stripChars(value[:std.length(value) - 1], '0123456789') == '';
    local durations = [k for k in std.objectFields(entry) if isDuration(entry[k])];
    entry
    + { [k]: number(entry[k]) for k in std.objectFields(entry) if std.isNumber(entry[k]) }
    + { [k + 'Percent']: $.percent(entry[k]) for k in ratios }
    + { [k + 'Text']: $.humanDuration(entry[k]) for k in durations }
    + { [k + 'Seconds']: $.seconds(entry[k]) for k in durations }
    + {
      s: config.comfywatchSelector,
      cluster: config.clusterLabel,
      absent: config.comfywatchAbsentSelector,
      forText: $.humanDuration(entry['for']),
    },

  // The number of distinct catalogues, (nodes_hash, models_hash) pairs, of each pool: the servers sharing a
  // `pool` label, ComfyUIFleetDegraded's per-target labels aggregated away so that a pool lies within one fleet
  // and comfywatch replicas reporting the same servers add no pair. ComfyUIPoolDrift and the fleet dashboard
  // count alike. selector: a template placeholder ('%(s)s') or matchers.
  poolCatalogues(config, selector)::
    'count without (nodes_hash, models_hash) (count without (%s) (comfyui_catalog_info{%s, pool!=""}))'
    % [config.alerts.ComfyUIFleetDegraded.perTargetLabels, selector],

  // Failed canary runs within `window`, per canary: runs minus successes (only successful runs are observed in
  // comfyui_canary_duration_seconds). Both exist at 0 from the canary's creation, whereas a reason's series of
  // comfyui_canary_failures_total appears with its first failure, at 1, an increment increase() cannot see.
  // ComfyUICanaryFailing, ComfyUIFleetDegraded and the target dashboard count alike. selector: a template
  // placeholder ('%(s)s') or matchers; window: a duration or a placeholder.
  canaryFailedRuns(selector, window)::
    '(increase(comfyui_canary_runs_total{%s}[%s]) - increase(comfyui_canary_duration_seconds_count{%s}[%s]))'
    % [selector, window, selector, window],

  enabled(config, key):: std.get(config.alerts[key], 'enabled', true),

  // One alerting rule. key: its _config.alerts entry (the alert name unless two rules share a name).
  // expr, summary and description are templates over params(); a literal % in them is written %%.
  rule(config, name, expr, summary, description, key=name)::
    local p = $.params(config, key);
    {
      configKey:: key,
      alert: name,
      expr: expr % p,
      'for': p['for'],
      labels: { severity: p.severity },
      annotations: {
        summary: summary % p,
        description: description % p,
        runbook_url: config.runbookURLPattern % std.asciiLower(name),
      },
    },

  // A rule group without the rules whose _config entry says `enabled: false`.
  group(config, name, rules):: {
    name: name,
    rules: [rule for rule in rules if $.enabled(config, rule.configKey)],
  },
}
