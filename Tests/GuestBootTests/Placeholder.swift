// GuestBootTests
