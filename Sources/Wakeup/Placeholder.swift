// Wakeup
