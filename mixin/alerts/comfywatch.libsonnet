// Alerts about comfywatch itself: its scrape, its checks' schedule, its configuration.
local lib = import 'lib.libsonnet';

function(config) lib.group(config, 'comfywatch', [
  // absent() also catches a job that vanished from the configuration or is named differently.
  lib.rule(
    config, 'ComfywatchDown',
    '(up{%(s)s} == 0) or absent(up{%(s)s})',
    'comfywatch {{ with $labels.instance }}at {{ . }} {{ end }}cannot be scraped',
    '{{ if $labels.instance }}Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) '
    + 'for %(forText)s (up = {{ $value }}){{ else }}No series up{%(s)s} exists: the scrape '
    + 'job is missing from the Prometheus configuration or named differently{{ end }}; no ComfyUI '
    + 'alert can fire meanwhile.',
  ),
  lib.rule(
    config, 'ComfywatchCheckOverruns',
    'increase(comfywatch_check_overruns_total{%(s)s}[%(window)s]) > 0',
    "comfywatch's {{ $labels.check }} check of {{ $labels.target }} overruns its interval",
    'The {{ $labels.check }} check of {{ $labels.target }} keeps taking longer than its interval '
    + '({{ $value | printf "%%.0f" }} overruns in the last %(windowText)s, and some in every %(windowText)s for '
    + '%(forText)s); runs are being skipped.',
  ),
  lib.rule(
    config, 'ComfywatchConfigReloadFailed',
    'comfywatch_config_last_reload_success{%(s)s} == 0',
    'comfywatch at {{ $labels.instance }} failed to reload its configuration',
    'The last configuration reload of comfywatch at {{ $labels.instance }} failed '
    + '(comfywatch_config_last_reload_success = {{ $value }}); it keeps running the previous configuration.',
  ),
])
