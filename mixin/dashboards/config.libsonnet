// Dashboard-only knobs, merged into the mixin's _config beside the shared ones (../config.libsonnet).
{
  _config+:: {
    dashboardTags: ['comfywatch', 'comfyui'],
    dashboardRefresh: '30s',
    dashboardPeriod: 'now-6h',

    // Fleet graphs draw only the k worst targets at each point in time, so 50 targets stay readable.
    fleetTopK: 10,

    // Jobs, canary runs, overruns and refusals can be minutes or hours apart: they are counted over this
    // window (increase) instead of rated over $__rate_interval, which is empty or a spike for rare events.
    rareEventWindow: '1h',
    // An hourly Comfy Cloud canary needs several runs in the window before a duration quantile means anything.
    canaryDurationWindow: '6h',

    // "Data age" (seconds since the newest comfywatch sample): orange, then red. A healthy scrape keeps it
    // under the scrape interval plus the 15 s step the panel looks with.
    dataAgeWarningSeconds: 120,
    dataAgeCriticalSeconds: 300,
    // How far back "Data age" looks for the newest sample; older data reads as "none for 1h+".
    dataAgeLookback: '1h',
  },
}
