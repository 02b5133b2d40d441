// Alertmanager inhibit_rules: while a cause fires, the alerts it explains stay quiet.
//
// `equal` scopes each rule to one target (cluster label, job, target) or, for ComfyUIFleetDegraded, to one
// fleet (cluster label, job); matching on target alone would let a down `studio` in one cluster silence
// `studio` in another. A label absent from both alerts counts as equal, so setups without a cluster label
// need no other rules. No alert matches both the source and the target side of a rule (the critical and the
// warning ComfyUITLSCertExpiringSoon share a name and differ in severity), so no alert silences its peers.
local names(alerts) = 'alertname=~"%s"' % std.join('|', alerts);

{
  alertmanagerInhibitRules+:: [
    {
      // Every poll of a down target fails, so the values below are frozen at their last reading or count
      // the outage itself. Left out: ComfyUIWebSocketLost and ComfyUICheckStale (their expressions exclude
      // down targets), ComfyUIAuthFailing (a cause of the outage), ComfyUIOutOfMemory (a likely cause of a
      // crash), the TLS certificate and the Cloud billing alerts (still true while the target is down).
      source_matchers: ['alertname="ComfyUIDown"'],
      target_matchers: [names([
        'ComfyUIQueueStalled',
        'ComfyUIQueueBacklog',
        'ComfyUIWorkerNotConsuming',
        'ComfyUICanaryFailing',
        'ComfyUICanaryNotRunning',
        'ComfyUICanarySlow',
        'ComfyUIServerErrors',
        'ComfyUIJobFailureRateHigh',
        'ComfyUIVRAMLow',
        'ComfyUIRAMLow',
        'ComfyCloudJobsStuck',
      ])],
      equal: [$._config.clusterLabel, 'job', 'target'],
    },
    {
      // A rejected credential fails the target's polls too, which reads as ComfyUIDown.
      source_matchers: ['alertname="ComfyUIAuthFailing"'],
      target_matchers: ['alertname="ComfyUIDown"'],
      equal: [$._config.clusterLabel, 'job', 'target'],
    },
    {
      // A failing canary does not succeed (CanaryNotRunning) and records no duration (CanarySlow).
      source_matchers: ['alertname="ComfyUICanaryFailing"'],
      target_matchers: [names(['ComfyUICanaryNotRunning', 'ComfyUICanarySlow'])],
      equal: [$._config.clusterLabel, 'job', 'target', 'canary'],
    },
    {
      // At 0 USD the balance is below any CreditsLow threshold, and Cloud refuses the canaries' jobs.
      source_matchers: ['alertname="ComfyCloudCreditsExhausted"'],
      target_matchers: [names([
        'ComfyCloudCreditsLow',
        'ComfyCloudCreditsRunningOut',
        'ComfyUICanaryFailing',
        'ComfyUICanaryNotRunning',
      ])],
      equal: [$._config.clusterLabel, 'job', 'target'],
    },
    {
      source_matchers: ['alertname="ComfyUITLSCertExpiringSoon"', 'severity="critical"'],
      target_matchers: ['alertname="ComfyUITLSCertExpiringSoon"', 'severity="warning"'],
      equal: [$._config.clusterLabel, 'job', 'target'],
    },
    {
      // One page for the fleet instead of one warning per target; the fleet alert has no target label.
      source_matchers: ['alertname="ComfyUIFleetDegraded"'],
      target_matchers: [names(['ComfyUIDown', 'ComfyUICanaryFailing'])],
      equal: [$._config.clusterLabel, 'job'],
    },
  ],
}
