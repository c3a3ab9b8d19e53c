"""Conversation evaluation: scripted visitors played against a running Parley over its public
HTTP API, with HubSpot, SendGrid and Google Calendar played by a loopback double, each
conversation scored on what the lead recorded, what the visitors heard and what was booked.

`python -m evals --help` runs it; `evals/README.md` says what each score means.
"""
