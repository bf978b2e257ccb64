"""One module per stage the coordinator asks of a site.

`identify` (who the site is), `secure` (the key ceremony and the he+ss key stages:
keygen, install, advertise, share, consistency, release), `train` (train locally, send the
weighted change) and `apply` (add the round's aggregate, store and evaluate it). Each stage is a
function of the site's `SiteContext` and the message's fields; `SiteService.handle` is the one
table from `MessageType` to stage.
"""
