// Builders for the comfywatch dashboards: label matchers, queries, panels, variables and the grid layout.
//   local lib = (import 'lib.libsonnet')($._config);
function(config) {
  local lib = self,

  datasource:: { type: 'prometheus', uid: '${datasource}' },

  // The one place label matchers are spelled. Expressions are written as templates:
  //   %(s)s  comfywatch's jobs and the dashboard's cluster and job choice (for series without a target: up)
  //   %(t)s  the same plus the target choice
  //   %(by)s the labels that identify one target across clusters and jobs (and carry the drill-down link)
  //   %(k)s, %(window)s, %(canaryWindow)s: the knobs of dashboards/config.libsonnet
  //   %(selector)s and %(c)s (selector and cluster) serve the variables that choose cluster and job
  local clustered = config.comfywatchSelector + ', %s=~"$cluster"' % config.clusterLabel,
  local scope = clustered + ', job=~"$job"',
  matchers:: {
    selector: config.comfywatchSelector,
    c: clustered,
    s: scope,
    t: scope + ', target=~"$target"',
    by: '%s, job, target' % config.clusterLabel,
    k: config.fleetTopK,
    window: config.rareEventWindow,
    canaryWindow: config.canaryDurationWindow,
  },
  expr(template):: template % lib.matchers,

  // A panel query. Stat-like panels pass instant=true: Prometheus then answers for the end of the time range
  // only, from samples of the last 5 minutes, so data that stopped arriving shows as "no data" instead of its
  // last value (a range query reduced with lastNotNull would show a value from 40 minutes ago as current).
  query(template, legend, instant=false):: {
    datasource: lib.datasource,
    editorMode: 'code',
    expr: lib.expr(template),
    legendFormat: legend,
    instant: instant,
    range: !instant,
  },

  steps(pairs):: { mode: 'absolute', steps: [{ color: p[0], value: p[1] } for p in pairs] },
  // {'0': ['Down', 'red']} -> a Grafana value mapping
  valueText(texts):: [{
    type: 'value',
    options: {
      [value]: { text: texts[value][0], color: texts[value][1], index: i }
      for i in std.range(0, std.length(std.objectFields(texts)) - 1)
      for value in [std.objectFields(texts)[i]]
    },
  }],
  upDown:: lib.valueText({ '0': ['Down', 'red'], '1': ['Up', 'green'] }),
  yesNo(bad='0'):: lib.valueText({
    '0': ['No', if bad == '0' then 'red' else 'green'],
    '1': ['Yes', if bad == '1' then 'red' else 'green'],
  }),

  // Data link from a per-target series to the target detail dashboard, keeping the time range and data source.
  targetLinks:: [{
    title: 'Target detail: ${__field.labels.target}',
    url: '/d/comfywatch-target/comfywatch-target?${datasource:queryparam}&${cluster:queryparam}'
         + '&var-job=${__field.labels.job}&var-target=${__field.labels.target}&${__url_time_range}',
  }],

  local panel(type, title, description, queries, unit, w, h) = {
    type: type,
    title: title,
    description: description,
    datasource: lib.datasource,
    gridPos: { w: w, h: h },
    targets: [queries[i] { refId: std.char(std.codepoint('A') + i) } for i in std.range(0, std.length(queries) - 1)],
    fieldConfig: { defaults: { unit: unit }, overrides: [] },
  },

  stat(title, description, queries, unit='none', thresholds=[['green', null]], mappings=[], colorMode='value',
       textMode='auto', graphMode='none', noValue=null, w=4, h=4)::
    panel('stat', title, description, queries, unit, w, h) {
      fieldConfig+: { defaults+: { thresholds: lib.steps(thresholds), mappings: mappings }
                                 + (if noValue == null then {} else { noValue: noValue }) },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: colorMode,
        graphMode: graphMode,
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: textMode,
      },
    },

  timeseries(title, description, queries, unit='short', thresholds=null, stacked=false, bars=false, min=0,
             links=[], w=8, h=8)::
    panel('timeseries', title, description, queries, unit, w, h) {
      fieldConfig+: { defaults+: {
        custom: {
          drawStyle: if bars then 'bars' else 'line',
          lineWidth: 1,
          fillOpacity: if stacked || bars then 30 else 10,
          showPoints: 'never',
          spanNulls: false,
          stacking: { mode: if stacked then 'normal' else 'none', group: 'A' },
        } + (if min == null then {} else { axisSoftMin: min })
          + (if thresholds == null then {} else { thresholdsStyle: { mode: 'line' } }),
        links: links,
      } + (if thresholds == null then {} else { thresholds: lib.steps(thresholds) }) },
      options: {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  stateTimeline(title, description, queries, mappings, links=[], w=24, h=6)::
    panel('state-timeline', title, description, queries, 'bool_yes_no', w, h) {
      fieldConfig+: { defaults+: {
        thresholds: lib.steps([['green', null]]),
        color: { mode: 'thresholds' },
        mappings: mappings,
        links: links,
      } },
      options: {
        showValue: 'never',
        mergeValues: true,
        rowHeight: 0.8,
        legend: { displayMode: 'list', placement: 'bottom', showLegend: false },
      },
    },

  bargauge(title, description, queries, unit, thresholds, min=0, max=1, links=[], w=12, h=8)::
    panel('bargauge', title, description, queries, unit, w, h) {
      fieldConfig+: { defaults+: { min: min, max: max, thresholds: lib.steps(thresholds), links: links } },
      options: {
        displayMode: 'gradient',
        orientation: 'horizontal',
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        showUnfilled: true,
      },
    },

  heatmap(title, description, queries, unit, w=12, h=8)::
    panel('heatmap', title, description, [q { format: 'heatmap' } for q in queries], unit, w, h) {
      options: {
        calculate: false,
        cellGap: 1,
        color: { mode: 'scheme', scheme: 'Oranges', steps: 64, exponent: 0.5 },
        yAxis: { axisPlacement: 'left', unit: unit },
        rowsFrame: { layout: 'auto' },
        tooltip: { mode: 'single', yHistogram: true },
        legend: { show: true },
      },
    },

  // Mixed into a panel whose value mappings or colours are meant for its other queries (1 = Valid): the values
  // of query refId are shown as numbers, coloured by thresholds of their own.
  thresholdsOf(refId, thresholds):: { fieldConfig+: { overrides+: [{
    matcher: { id: 'byFrameRefID', options: refId },
    properties: [{ id: 'mappings', value: [] }, { id: 'thresholds', value: lib.steps(thresholds) }],
  }] } },

  row(title, panels):: { title: title, panels: panels },

  // The top row of every dashboard: is comfywatch itself scraped, how old is its newest data, and which of
  // this bundle's alerts fire. alertNames: every alert name of the bundle (from prometheusAlerts).
  healthRow(alertNames):: lib.row('comfywatch health', [
    lib.stat(
      'comfywatch scraped',
      'Whether Prometheus scrapes comfywatch (min of up over its scrape jobs in the selected cluster and job): '
      + 'Down when any comfywatch scrape fails, or when Prometheus scrapes no comfywatch at all (then every other '
      + 'panel is empty or stale, not healthy). ComfywatchDown fires after a few minutes of this.',
      // vector(0) is honest here: no comfywatch scrape at all reads as Down.
      [lib.query('min(up{%(s)s}) or vector(0)', 'comfywatch', instant=true)],
      thresholds=[['red', null], ['green', 1]], mappings=lib.upDown, colorMode='background', w=8,
    ),
    lib.stat(
      'Data age',
      'Seconds since the newest comfyui_up sample of the selected targets: the age of everything these '
      + 'dashboards show. It grows from the moment comfywatch stops being scraped; "no data for %s" means '
      % config.dataAgeLookback + 'nothing arrived in that window.',
      [lib.query('time() - max(max_over_time(timestamp(comfyui_up{%(t)s})[' + config.dataAgeLookback + ':15s]))',
                 'data age', instant=true)],
      unit='s',
      thresholds=[['green', null], ['orange', config.dataAgeWarningSeconds], ['red', config.dataAgeCriticalSeconds]],
      colorMode='background', noValue='no data for ' + config.dataAgeLookback, w=8,
    ),
    lib.stat(
      'Firing alerts',
      'Alerts of the comfywatch bundle firing now for the selection (ALERTS series, matched by alert name), '
      + 'including those about comfywatch itself or the whole fleet, which have no target label. 0 only while '
      + 'comfywatch is scraped: without it this is empty, not green.',
      [lib.query(
        'count(ALERTS{alertstate="firing", alertname=~"' + std.join('|', alertNames) + '", '
        + '%s=~"$cluster", job=~"$job", target=~"$target|"}) ' % config.clusterLabel
        + 'or (0 * group(up{%(s)s} == 1))', 'firing', instant=true,
      )],
      thresholds=[['green', null], ['orange', 1]], colorMode='background', w=8,
    ),
  ]),

  // Counts that read 0 (not empty) while comfywatch is scraped and up, and stay empty when it is not, so an
  // empty or abandoned Prometheus never shows a green 0.
  countOrZero(template):: '(%s) or (0 * group(up{%%(s)s} == 1))' % template,

  variables:: {
    datasource: {
      name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus',
      current: {}, hide: 0, includeAll: false, multi: false, options: [], refresh: 1, regex: '', skipUrlSync: false,
    },
    // label_values(<selector template>, <label>); multi-value variables offer All.
    query(name, label, description, selector, labelName=name, multi=true, allValue='.+')::
      local definition = 'label_values(%s, %s)' % [lib.expr(selector), labelName];
      {
        name: name,
        label: label,
        description: description,
        type: 'query',
        datasource: lib.datasource,
        definition: definition,
        query: { query: definition, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
        refresh: 2,
        sort: 1,
        regex: '',
        hide: 0,
        multi: multi,
        includeAll: multi,
        current: {},
        options: [],
        skipUrlSync: false,
      } + (if multi then { allValue: allValue } else {}),
    // All is ".*" for cluster and job, which also matches series without the label: a Prometheus that adds no
    // cluster label, and alerts about comfywatch as a whole.
    cluster: lib.variables.query(
      'cluster', 'Cluster',
      'Clusters (the `%s` label of the comfywatch scrape jobs); All also matches series without it' % config.clusterLabel,
      'up{%(selector)s}', labelName=config.clusterLabel, allValue='.*',
    ),
    job: lib.variables.query('job', 'Job', "comfywatch's scrape jobs", 'up{%(c)s}', allValue='.*'),
  },

  // Lays rows out on Grafana's 24-column grid (panels flow left to right and wrap) and numbers every panel.
  dashboard(uid, title, description, variables, rows):: {
    local placed = std.foldl(
      function(state, row)
        local inRow = std.foldl(
          function(s, p)
            local wraps = s.x + p.gridPos.w > 24;
            local x = if wraps then 0 else s.x;
            local y = if wraps then s.y + s.lineHeight else s.y;
            {
              x: x + p.gridPos.w,
              y: y,
              lineHeight: if wraps then p.gridPos.h else std.max(s.lineHeight, p.gridPos.h),
              panels: s.panels + [p { gridPos+: { x: x, y: y } }],
            },
          row.panels,
          { x: 0, y: state.y + 1, lineHeight: 0, panels: [] },
        );
        {
          y: inRow.y + inRow.lineHeight,
          panels: state.panels
                  + [{ type: 'row', title: row.title, collapsed: false, panels: [], gridPos: { h: 1, w: 24, x: 0, y: state.y } }]
                  + inRow.panels,
        },
      rows,
      { y: 0, panels: [] },
    ).panels,
    uid: uid,
    title: title,
    description: description,
    tags: config.dashboardTags,
    timezone: '',
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: config.dashboardRefresh,
    time: { from: config.dashboardPeriod, to: 'now' },
    timepicker: {},
    fiscalYearStartMonth: 0,
    liveNow: false,
    weekStart: '',
    links: [{
      title: 'comfywatch dashboards', type: 'dashboards', tags: ['comfywatch'], asDropdown: true, includeVars: true,
      keepTime: true, icon: 'external link', targetBlank: false, tooltip: '', url: '',
    }],
    annotations: { list: [{
      builtIn: 1, datasource: { type: 'grafana', uid: '-- Grafana --' }, enable: true, hide: true,
      iconColor: 'rgba(0, 211, 255, 1)', name: 'Annotations & Alerts', type: 'dashboard',
    }] },
    templating: { list: variables },
    panels: [placed[i] { id: i + 1 } for i in std.range(0, std.length(placed) - 1)],
  },
}
