// QEMUDriver
