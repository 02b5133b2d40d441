// Every knob of the comfywatch mixin. Override any of them with
//   (import 'mixin.libsonnet') + { _config+:: { comfywatchSelector: 'job="comfywatch-prod"' } }
// Dashboard-only knobs live in dashboards/config.libsonnet and merge into the same _config.
{
  _config+:: {
    // Label matchers selecting comfywatch's scrape jobs (/metrics and /probe alike). Applied to every series
    // selector of the rules, alerts and dashboards, and to the `up` series that ComfywatchDown watches.
    comfywatchSelector: 'job=~"comfywatch.*"',

    // The label that tells clusters (or regions, environments) apart. Alerts keep it, inhibitions match on it
    // with job and target, and the dashboards offer it as a variable. Series without it still work.
    clusterLabel: 'cluster',

    // Where each alert's runbook_url points: %s is the alert name in lower case (the runbook's heading anchor).
    runbookURLPattern: 'https://github.com/comfywatch/comfywatch/blob/main/docs/runbook.md#%s',
  },
}
