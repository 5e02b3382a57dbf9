package natsutil

// ReadResets is the MaxResetAttempts of an ordered consumer that serves a
// bounded read: a CLI command, a page, one rule evaluation. nats.go makes
// a broken ordered consumer again for ever by default (0 means unlimited),
// each try waiting up to 10 s for the server, and Fetch, FetchNoWait and a
// Messages iterator's Next do not look at any context while they do: a read
// from a hub that died, restarted or lost the stream's leader could block
// for good (the chaos harness hung 10 min in it). Three tries (10 s each
// at most, 1 s and 2 s apart) ride out a stream leader election and give
// up some 33 s after the break, so the read fails and says what it read.
const ReadResets = 3
