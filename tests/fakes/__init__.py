"""Stand-ins for the providers, speaking their wire formats: a push service, Twilio, the Telegram Bot
API, an SMTP mailbox, and plain channels for the contact-plan tests."""
