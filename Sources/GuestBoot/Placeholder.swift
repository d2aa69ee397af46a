// GuestBoot
