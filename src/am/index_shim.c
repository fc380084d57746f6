/*
 * torii index builds: the entry points PostgreSQL calls, and the calls into
 * core code that evaluate user code per row.
 *
 * Why C (the same reason as src/hints/shim.c): a call from Rust into
 * PostgreSQL goes through pgrx's FFI guard, which turns an ERROR into a Rust
 * panic and raises a new error at the #[pg_guard] boundary with message,
 * detail, hint and SQLSTATE only.  An index expression or predicate runs user
 * code (SQL functions, casts, operators), and its errors carry CONTEXT lines
 * (e.g. `SQL function "f" statement 1`) a user needs to find the culprit.
 *
 * So the per-row calls (ExecQual + FormIndexDatum, and the index AM's build
 * callback) run here under PG_TRY: an error is copied (CopyErrorData) into
 * the caller's memory context and handed back; the Rust frames clean up and
 * return normally; the entry point below re-throws the copy with
 * ReThrowError, unchanged.  The Rust body holds no lock across these calls.
 */
#include "postgres.h"

#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"

/* Rust side (src/am/index_build.rs). */
extern double torii_index_build_range_scan_body(Relation table, Relation index,
												IndexInfo *index_info,
												bool allow_sync, bool anyvisible,
												bool progress,
												BlockNumber start_blockno,
												BlockNumber numblocks,
												IndexBuildCallback callback,
												void *callback_state,
												TableScanDesc scan,
												ErrorData **error);
extern void torii_index_validate_scan_body(Relation table, Relation index,
										   IndexInfo *index_info,
										   Snapshot snapshot,
										   ValidateIndexState *state,
										   ErrorData **error);

/* Called by PostgreSQL (the table AM routine, src/am/mod.rs). */
double		torii_index_build_range_scan(Relation table, Relation index,
										 IndexInfo *index_info, bool allow_sync,
										 bool anyvisible, bool progress,
										 BlockNumber start_blockno,
										 BlockNumber numblocks,
										 IndexBuildCallback callback,
										 void *callback_state,
										 TableScanDesc scan);
void		torii_index_validate_scan(Relation table, Relation index,
									  IndexInfo *index_info, Snapshot snapshot,
									  ValidateIndexState *state);

/* Called from Rust. */
int			torii_form_index_row(IndexInfo *index_info, ExprState *predicate,
								 ExprContext *econtext, EState *estate,
								 TupleTableSlot *slot, Datum *values,
								 bool *isnull, ErrorData **error);
void		torii_call_build_callback(IndexBuildCallback callback, Relation index,
									  ItemPointer tid, Datum *values,
									  bool *isnull, void *callback_state,
									  ErrorData **error);

double
torii_index_build_range_scan(Relation table, Relation index,
							 IndexInfo *index_info, bool allow_sync,
							 bool anyvisible, bool progress,
							 BlockNumber start_blockno, BlockNumber numblocks,
							 IndexBuildCallback callback, void *callback_state,
							 TableScanDesc scan)
{
	ErrorData  *error = NULL;
	double		reltuples;

	reltuples = torii_index_build_range_scan_body(table, index, index_info,
												  allow_sync, anyvisible,
												  progress, start_blockno,
												  numblocks, callback,
												  callback_state, scan, &error);
	if (error != NULL)
		ReThrowError(error);
	return reltuples;
}

void
torii_index_validate_scan(Relation table, Relation index,
						  IndexInfo *index_info, Snapshot snapshot,
						  ValidateIndexState *state)
{
	ErrorData  *error = NULL;

	torii_index_validate_scan_body(table, index, index_info, snapshot, state,
								   &error);
	if (error != NULL)
		ReThrowError(error);
}

/* Copy the current error into cxt and clear the error state. */
static void
catch_error(MemoryContext cxt, ErrorData **error)
{
	MemoryContextSwitchTo(cxt);
	*error = CopyErrorData();
	FlushErrorState();
}

/*
 * The index values of the row in slot (the econtext's scan tuple): 1, or 0
 * when the partial index's predicate rejects the row, or -1 with *error set.
 */
int
torii_form_index_row(IndexInfo *index_info, ExprState *predicate,
					 ExprContext *econtext, EState *estate,
					 TupleTableSlot *slot, Datum *values, bool *isnull,
					 ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int result = 0;

	PG_TRY();
	{
		MemoryContextReset(econtext->ecxt_per_tuple_memory);
		if (predicate != NULL && !ExecQual(predicate, econtext))
			result = 0;
		else
		{
			FormIndexDatum(index_info, slot, estate, values, isnull);
			result = 1;
		}
	}
	PG_CATCH();
	{
		catch_error(cxt, error);
		result = -1;
	}
	PG_END_TRY();
	return result;
}

/* The index AM's build callback for one row; *error set if it failed. */
void
torii_call_build_callback(IndexBuildCallback callback, Relation index,
						  ItemPointer tid, Datum *values, bool *isnull,
						  void *callback_state, ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		callback(index, tid, values, isnull, true, callback_state);
	}
	PG_CATCH();
	{
		catch_error(cxt, error);
	}
	PG_END_TRY();
}
