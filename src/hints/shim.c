/*
 * torii planner-hint hooks: the entry points PostgreSQL calls.
 *
 * Why C: every call from Rust into PostgreSQL goes through pgrx's FFI guard,
 * which catches an ERROR (sigsetjmp + CopyErrorData), turns it into a Rust
 * panic and raises a *new* error at the #[pg_guard] boundary.  The new error
 * keeps the message, detail, hint and SQLSTATE but loses the rest of the
 * original ErrorData: its CONTEXT lines (e.g. `SQL function "log" statement 1`
 * for a SQL function inlined and constant-folded at planning time), the
 * cursor position, the internal query, the schema/table/column names, the
 * source location.  torii.so is loaded in every session that touches a torii
 * table, so its hooks run for every statement planned there: an error raised
 * by the next planner, standard_join_search, geqo or a chained hook must reach
 * PostgreSQL untouched.
 *
 * So the hooks are implemented here: the calls into core code run in C, under
 * PG_TRY when torii has state to clean up (hint stack, GUC nest level of
 * Set(...) hints, enable_* switches), and the error is re-thrown as is with
 * PG_RE_THROW.  torii's own logic stays in Rust (hooks.rs): the torii_hints_*
 * functions declared below are #[pg_guard] Rust functions that do not call
 * back into the code guarded here, and hold no Rust value with a destructor
 * across these calls (the planner's state travels as an opaque pointer).
 *
 * torii's own join search for join hints (hooks.rs) is a loop in Rust that
 * calls core to build each join relation: there, the core calls go through
 * the torii_hints_*_join_rel functions below, which catch an error, copy it
 * (CopyErrorData) and hand it back; the Rust frames return normally and
 * torii_join_search re-throws the copy with ReThrowError, unchanged.
 *
 * What still goes through pgrx: errors in torii's own lookups (stored hints)
 * and in the few core calls the Rust side makes for hinted relations only
 * (index names, gather paths for Parallel(... hard)).
 */
#include "postgres.h"

#include "nodes/params.h"
#include "nodes/parsenodes.h"
#include "nodes/pathnodes.h"
#include "nodes/plannodes.h"
#include "optimizer/cost.h"
#include "optimizer/geqo.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planner.h"

/*
 * What the Rust side wants for one hinted base relation's scan paths.  Same
 * layout as `ScanPlan` in hooks.rs.
 */
typedef struct ToriiScanPlan
{
	bool		enable_seqscan;
	bool		enable_indexscan;
	bool		enable_indexonlyscan;
	bool		enable_bitmapscan;
	bool		enable_tidscan;
	/* Parallel(t n): n, or -1 without a Parallel hint for the relation */
	int			workers;
	/* read by the Rust side only */
	int64		scan_idx;
	int64		parallel_idx;
	bool		hard;
	bool		prefer_index_only;
} ToriiScanPlan;

/* Join-method switches for one join relation (`JoinSwitches` in hooks.rs). */
typedef struct ToriiJoinSwitches
{
	bool		nestloop;
	bool		hashjoin;
	bool		mergejoin;
} ToriiJoinSwitches;

/* The planner switches torii changes while regenerating paths. */
typedef struct ToriiSwitches
{
	bool		seqscan;
	bool		indexscan;
	bool		indexonlyscan;
	bool		bitmapscan;
	bool		tidscan;
	int			max_workers;
} ToriiSwitches;

/* Rust side (hooks.rs). */
extern void *torii_hints_planner_begin(Query *parse, const char *query_string);
extern void torii_hints_planner_end(void *state, bool failed);
extern bool torii_hints_active(void);
extern bool torii_hints_scan_prepare(PlannerInfo *root, RelOptInfo *rel,
									 RangeTblEntry *rte, ToriiScanPlan *plan);
extern void torii_hints_scan_finish(PlannerInfo *root, RelOptInfo *rel,
									RangeTblEntry *rte, const ToriiScanPlan *plan);
extern RelOptInfo *torii_hints_join_search(PlannerInfo *root, int levels_needed,
										   List *initial_rels, ErrorData **error);

/* Called from Rust (hooks.rs). */
void		torii_hints_install_hooks(void);
RelOptInfo *torii_hints_make_join_rel(PlannerInfo *root, RelOptInfo *r1,
									  RelOptInfo *r2,
									  const ToriiJoinSwitches *switches,
									  int direction, ErrorData **error);
void		torii_hints_finish_join_rel(PlannerInfo *root, RelOptInfo *rel,
										bool gather, ErrorData **error);

static planner_hook_type prev_planner_hook = NULL;
static set_rel_pathlist_hook_type prev_set_rel_pathlist_hook = NULL;
static join_search_hook_type prev_join_search_hook = NULL;

static PlannedStmt *
call_next_planner(Query *parse, const char *query_string, int cursor_options,
				  ParamListInfo bound_params)
{
	if (prev_planner_hook)
		return prev_planner_hook(parse, query_string, cursor_options, bound_params);
	return standard_planner(parse, query_string, cursor_options, bound_params);
}

static PlannedStmt *
torii_planner(Query *parse, const char *query_string, int cursor_options,
			  ParamListInfo bound_params)
{
	void	   *state;
	PlannedStmt *result;

	/* Finds the hints, pushes them, applies Set(...) at a new GUC level. */
	state = torii_hints_planner_begin(parse, query_string);
	if (state == NULL)
		return call_next_planner(parse, query_string, cursor_options, bound_params);

	PG_TRY();
	{
		result = call_next_planner(parse, query_string, cursor_options, bound_params);
	}
	PG_CATCH();
	{
		/* Pops the GUC level and the hint state; the error goes on as is. */
		torii_hints_planner_end(state, true);
		PG_RE_THROW();
	}
	PG_END_TRY();

	torii_hints_planner_end(state, false);
	return result;
}

static void
save_switches(ToriiSwitches *s)
{
	s->seqscan = enable_seqscan;
	s->indexscan = enable_indexscan;
	s->indexonlyscan = enable_indexonlyscan;
	s->bitmapscan = enable_bitmapscan;
	s->tidscan = enable_tidscan;
	s->max_workers = max_parallel_workers_per_gather;
}

static void
restore_switches(const ToriiSwitches *s)
{
	enable_seqscan = s->seqscan;
	enable_indexscan = s->indexscan;
	enable_indexonlyscan = s->indexonlyscan;
	enable_bitmapscan = s->bitmapscan;
	enable_tidscan = s->tidscan;
	max_parallel_workers_per_gather = s->max_workers;
}

/*
 * What set_plain_rel_pathlist does, with the enable_* switches (and the
 * parallel degree) the scan hints ask for, set for this relation only.
 */
static void
regenerate_scan_paths(PlannerInfo *root, RelOptInfo *rel, const ToriiScanPlan *plan)
{
	ToriiSwitches saved;

	save_switches(&saved);
	PG_TRY();
	{
		Relids		required_outer = rel->lateral_relids;

		enable_seqscan = plan->enable_seqscan;
		enable_indexscan = plan->enable_indexscan;
		enable_indexonlyscan = plan->enable_indexonlyscan;
		enable_bitmapscan = plan->enable_bitmapscan;
		enable_tidscan = plan->enable_tidscan;
		if (plan->workers > 0)
			max_parallel_workers_per_gather = plan->workers;

		rel->pathlist = NIL;
		rel->partial_pathlist = NIL;
		add_path(rel, create_seqscan_path(root, rel, required_outer, 0));
		if (rel->consider_parallel && required_outer == NULL && plan->workers != 0)
		{
			int			n = plan->workers > 0 ? plan->workers :
				compute_parallel_worker(rel, rel->pages, -1,
										max_parallel_workers_per_gather);

			if (n > 0)
				add_partial_path(rel, create_seqscan_path(root, rel, NULL, n));
		}
		create_index_paths(root, rel);
		create_tidscan_paths(root, rel);
	}
	PG_FINALLY();
	{
		restore_switches(&saved);
	}
	PG_END_TRY();
}

static void
torii_set_rel_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti,
					   RangeTblEntry *rte)
{
	if (torii_hints_active())
	{
		ToriiScanPlan plan;

		if (torii_hints_scan_prepare(root, rel, rte, &plan))
		{
			regenerate_scan_paths(root, rel, &plan);
			torii_hints_scan_finish(root, rel, rte, &plan);
		}
	}
	if (prev_set_rel_pathlist_hook)
		prev_set_rel_pathlist_hook(root, rel, rti, rte);
}

/*
 * An inner join built in one direction only (outer, inner): what
 * make_join_rel does for a plain inner join, minus the reversed pair.
 */
static RelOptInfo *
directed_inner_join(PlannerInfo *root, RelOptInfo *outer, RelOptInfo *inner)
{
	SpecialJoinInfo *sjinfo = makeNode(SpecialJoinInfo);
	Relids		joinrelids;
	List	   *restrictlist = NIL;
	RelOptInfo *joinrel;

	sjinfo->min_lefthand = outer->relids;
	sjinfo->min_righthand = inner->relids;
	sjinfo->syn_lefthand = outer->relids;
	sjinfo->syn_righthand = inner->relids;
	sjinfo->jointype = JOIN_INNER;
	joinrelids = bms_union(outer->relids, inner->relids);
	joinrel = build_join_rel(root, joinrelids, outer, inner, sjinfo, &restrictlist);
	if (is_dummy_rel(joinrel))
		return joinrel;
	add_paths_to_joinrel(root, joinrel, outer, inner, JOIN_INNER, sjinfo,
						 restrictlist);
	return joinrel;
}

/*
 * Catch the current error into *error: copied in the caller's memory
 * context, error state flushed.  The caller (Rust) unwinds its own frames
 * and torii_join_search re-throws the copy.
 */
static void
catch_error(MemoryContext cxt, ErrorData **error)
{
	MemoryContextSwitchTo(cxt);
	*error = CopyErrorData();
	FlushErrorState();
}

RelOptInfo *
torii_hints_make_join_rel(PlannerInfo *root, RelOptInfo *r1, RelOptInfo *r2,
						  const ToriiJoinSwitches *switches, int direction,
						  ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		nestloop = enable_nestloop;
	bool		hashjoin = enable_hashjoin;
	bool		mergejoin = enable_mergejoin;
	RelOptInfo *volatile rel = NULL;

	PG_TRY();
	{
		enable_nestloop = switches->nestloop;
		enable_hashjoin = switches->hashjoin;
		enable_mergejoin = switches->mergejoin;
		if (direction > 0)
			rel = directed_inner_join(root, r1, r2);
		else if (direction < 0)
			rel = directed_inner_join(root, r2, r1);
		else
			rel = make_join_rel(root, r1, r2);
	}
	PG_CATCH();
	{
		catch_error(cxt, error);
		rel = NULL;
	}
	PG_END_TRY();
	enable_nestloop = nestloop;
	enable_hashjoin = hashjoin;
	enable_mergejoin = mergejoin;
	return rel;
}

/* What standard_join_search does for each join relation of a level. */
void
torii_hints_finish_join_rel(PlannerInfo *root, RelOptInfo *rel, bool gather,
							ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		generate_partitionwise_join_paths(root, rel);
		if (gather)
			generate_useful_gather_paths(root, rel, false);
		set_cheapest(rel);
	}
	PG_CATCH();
	{
		catch_error(cxt, error);
	}
	PG_END_TRY();
}

static RelOptInfo *
torii_join_search(PlannerInfo *root, int levels_needed, List *initial_rels)
{
	if (torii_hints_active())
	{
		ErrorData  *error = NULL;

		/* NULL when no join hint applies at this query level */
		RelOptInfo *rel = torii_hints_join_search(root, levels_needed,
												  initial_rels, &error);

		if (error != NULL)
			ReThrowError(error);
		if (rel != NULL)
			return rel;
	}
	if (prev_join_search_hook)
		return prev_join_search_hook(root, levels_needed, initial_rels);
	if (enable_geqo && levels_needed >= geqo_threshold)
		return geqo(root, levels_needed, initial_rels);
	return standard_join_search(root, levels_needed, initial_rels);
}

void
torii_hints_install_hooks(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = torii_planner;
	prev_set_rel_pathlist_hook = set_rel_pathlist_hook;
	set_rel_pathlist_hook = torii_set_rel_pathlist;
	prev_join_search_hook = join_search_hook;
	join_search_hook = torii_join_search;
}
