import ProvisionerCore

ProvisionerMain.run()
