// Alerts about comfywatch itself: its scrape, its checks' schedule, its configuration.
local lib = import 'lib.libsonnet';

function(config) lib.group(config, 'comfywatch', [
  lib.rule(
    config, 'ComfywatchDown',
    'up{%(s)s} == 0',
    'comfywatch at {{ $labels.instance }} cannot be scraped',
    'Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for %(forText)s '
    + '(up = {{ $value }}); no ComfyUI alert about its targets can fire meanwhile.',
  ),
  // absent() catches a scrape job that vanished from the configuration or is named differently. It copies
  // the selector's equality matchers into its labels, which is all the routing it can have.
  lib.rule(
    config, 'ComfywatchAbsent',
    'absent(up{%(absent)s})',
    'Prometheus scrapes no comfywatch (job {{ $labels.job }})',
    'No series up{%(absent)s} has existed for %(forText)s (value {{ $value }}): the scrape job of comfywatch is '
    + 'missing from the Prometheus configuration or named differently, and no comfywatch alert can fire.',
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
