package handlers

import (
	"context"

	"github.com/omninode/lockworker/topics"
)

// operation is how the worker applies one operation of topics.Operations
// (which holds what the contract says of it: fields, validation, answers).
// A new operation is a row here, a row there, its handler file and its
// tests; TestOperationsTable checks the two tables agree.
type operation struct {
	// apply applies a valid command of the operation inside the batch's
	// transaction (the general path): it locks what it reads and decides.
	apply func(a *applier, ctx context.Context) error
	// atOnce, when set, makes the operation's one-statement common case
	// (atonce.go): a command the statement applies skips apply's reads;
	// apply must take the statement's result first (applier.atOnce).
	atOnce func() commonCase
	// barrier: commands after it in a batch must not go ahead of it, as a
	// cleanup must see exactly the commands before it.
	barrier bool
}

var operations = map[string]operation{
	topics.OpAcquire: {apply: (*applier).acquire, atOnce: func() commonCase { return &grantArgs{} }},
	topics.OpRelease: {apply: (*applier).release, atOnce: func() commonCase { return &holderArgs{sql: releaseAtOnceSQL, op: topics.OpRelease} }},
	topics.OpExtend:  {apply: (*applier).extend, atOnce: func() commonCase { return &holderArgs{sql: extendAtOnceSQL, op: topics.OpExtend} }},
	topics.OpRevoke:  {apply: (*applier).revoke},
	topics.OpQuery:   {apply: (*applier).query},
	topics.OpCleanup: {apply: (*applier).cleanup, barrier: true},

	topics.OpSessionOpen:      {apply: (*applier).sessionOpen},
	topics.OpSessionKeepAlive: {apply: (*applier).sessionKeepAlive},
	topics.OpSessionClose:     {apply: (*applier).sessionClose},
}
