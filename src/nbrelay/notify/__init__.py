"""Notifications for people who are not on the page: webhooks and e-mail, sent from an outbox in the store.

`payload.py` and `outbox.py` are pure (what a job's end owes, and to whom); `signing.py` (Standard Webhooks) and
`ssrf.py` (which addresses may be called); `webhook.py` and `email.py` make one attempt each (`outcome.py`), over
`tls.py`'s TLS context; `delivery.py` is the loop every web node runs; `service.py` is what users manage
(endpoints, recipients).
"""
