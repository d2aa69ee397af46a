// CloudHypervisorDriver
