// ProvisionerCoreTests
