// Package fuzzseeds holds the command records the fuzz targets start from:
// topics' FuzzDecode, which judges what Decode accepts, and worker's
// FuzzApplyRecord, which drives the same records through PostgreSQL, so a
// record Decode lets through and PostgreSQL refuses is caught where it
// matters. One list: a seed added for one target reaches both.
package fuzzseeds

// Commands returns the seeds, as command records' values.
func Commands() [][]byte {
	var out [][]byte
	for _, s := range commands {
		out = append(out, []byte(s))
	}
	return out
}

var commands = []string{
	`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":1,"wait_timeout":2,"owner_metadata":{"a":[1,2]},"reply_to":"locks.replies.x"}`,
	`{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":-5}`,
	`{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":1e2}`,
	`{"operation":"cleanup","lock_name":"*","max_age_seconds":1e308}`,
	`{"v":2}`, `{"owner_metadata": null, "operation":"acquire"}`, `{"lock_name":"\ud800"}`,
	``, `null`, `[]`, `{`, `{"operation":1}`, " \n{}",
	// Poison PostgreSQL refuses on every retry, and keys encoding/json folds.
	`{"operation":"acquire","lock_name":"a","owner_id":"o\u0000","request_id":"\u0000","reply_to":"locks.replies.\u0000"}`,
	`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"a":[{"\u0000":"\u0000"}]}}`,
	`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"\ud83d","j":"\ud83d\ude00","n":[1e131072,0e-99999,1e308]}}`,
	"{\"operation\":\"acquire\",\"lock_name\":\"a\xff\",\"owner_id\":\"\xc3\",\"owner_metadata\":{\"\xed\xa0\x80\":1}}",
	`{"v":2,"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"30s"}`,
	`{"v":99999999999999999999}`, `{"v":1.5}`, `{"v":"1"}`, `{"v":null,"V":2}`,
	`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0}`,
	`{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":-0.0}`,
	"{\"OPERATION\":\"acquire\",\"Lock_Name\":\"a\",\"loc\u212a_name\":\"b\",\"lock\\u005fname\":\"c\",\"lock_name\":\"d\"}",
	`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":" "}`,
	`{"operation":"query","lock_name":"a\\u0000\\","x":{"y":["}",{"z":"]\""}]}}`,
	// Fields the operation does not read: dropped, not judged.
	`{"operation":"query","lock_name":"a","lease_duration":1e400,"max_age_seconds":-1e999}`,
	`{"operation":"query","lock_name":"a","owner_metadata":{"k":"\u0000","s":"\ud800"},"session_id":"\u0000"}`,
	`{"operation":"revoke","lock_name":"a","owner_id":"","reason":"r"}`,
	`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":""}`,
	// Above 0 but below float64's smallest: no 0 ("not given"), judged as
	// above 0 (a max_hold below its range, a wait that queues).
	`{"operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400}`,
	`{"operation":"acquire","lock_name":"a","owner_id":"o","wait_timeout":1e-400,"lock_delay":1E-400,"max_hold":-1e-400,"reply_to":"locks.replies.x"}`,
	`{"operation":"cleanup","lock_name":"*","max_age_seconds":0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001}`,
}
