{ alertmanagerInhibitRules+:: [] }
