package dev.beamport.flink;

import java.util.Collections;
import org.apache.beam.sdk.util.construction.resources.PipelineResourcesDetector;

/**
 * Beam's Flink job server stages with each job the jars of its own class path (about 150 MB: a dozen seconds per
 * submission, and as much again in the TaskManager's blob storage per job). A cluster started by
 * scripts/flink-cluster has those jars on its JobManager's and TaskManager's class path already (and loads them
 * parent-first), so Beamport's Flink engine names this factory in the job's pipeline options
 * (pipelineResourcesDetectorFactoryClass) and nothing is staged.
 */
public final class NothingToStage implements PipelineResourcesDetector.Factory {
  public static NothingToStage create() {
    return new NothingToStage();
  }

  @Override
  public PipelineResourcesDetector getPipelineResourcesDetector() {
    return classLoader -> Collections.emptyList();
  }
}
