"""The gateway's live status page: server side (gateway.web.server), its data (live, view), static assets."""
