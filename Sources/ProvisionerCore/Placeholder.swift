// ProvisionerCore
