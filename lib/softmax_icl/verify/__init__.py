"""Check functions of each chapter's claims, shared by the chapters, the tests and the ledger."""
