// CloudHypervisorDriverTests
