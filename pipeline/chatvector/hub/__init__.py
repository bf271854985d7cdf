"""The Hugging Face Hub as chatvector talks to it: the one client of a command (`client`), the one retry
policy (`retry`) and the one translator of Hub errors into one line (`client.translate`), the Hub's card-metadata
rules (`cardrules`, shared with the local Hub in `chatvector.localhub`) and the heads of input files read once
(`probes`). Not the local Hub's server: that is `chatvector.localhub` (its repository store is `localhub.hub`).
"""
