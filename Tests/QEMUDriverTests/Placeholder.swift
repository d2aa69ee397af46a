// QEMUDriverTests
