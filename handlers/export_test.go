package handlers

// GeneralPathOnly makes b apply every command by the general path, without
// the one-statement common cases, for the differential test.
func GeneralPathOnly(b *Batch) { b.generalOnly = true }
